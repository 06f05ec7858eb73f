import assert from 'node:assert/strict';
import { readdirSync } from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { computeDigest, SHA256 } from '../../../src/common/digest.js';
import { DiskBlobStore } from '../../../src/storage/disk-store.js';
import { tmpDir } from '../../../support/tmp.js';

const openFds = () => readdirSync('/proc/self/fd').length;

// Interrupted uploads may wait minutes to be resumed; a descriptor each would
// let a client exhaust the process's descriptors with uploads it never finishes.
describe('DiskBlobStore writers', () => {
  it('hold no descriptor once released, and continue at the right offset', async () => {
    const directory = tmpDir();
    const store = await DiskBlobStore.open({ directory, limitBytes: 1 << 20 });
    const data = Buffer.alloc(30_000);
    for (let i = 0; i < data.length; i++) data[i] = (i * 7 + 3) & 0xff;
    const d = computeDigest(SHA256, data);
    const fds = openFds();
    const writers = Array.from({ length: 20 }, () => store.beginWrite(d));
    for (const w of writers) await w.write(data.subarray(0, 10_000));
    assert.equal(openFds(), fds + 20, 'one descriptor per writer while bytes flow');
    for (const w of writers) await w.release!();
    assert.equal(openFds(), fds, 'none once released');
    assert.equal(readdirSync(path.join(directory, 'tmp')).length, 20, 'their bytes are kept');

    for (const w of writers.slice(1)) await w.abort();
    assert.equal(readdirSync(path.join(directory, 'tmp')).length, 1, 'aborting a released writer removes its file');
    const w = writers[0]!;
    await w.write(data.subarray(10_000, 20_000));
    await w.release!();
    await w.write(data.subarray(20_000));
    await w.commit();
    assert.equal(openFds(), fds);
    assert.deepEqual(await store.get(d), data);
    assert.deepEqual(readdirSync(path.join(directory, 'tmp')), []);
  });
});
