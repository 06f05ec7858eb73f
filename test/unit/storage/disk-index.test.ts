import assert from 'node:assert/strict';
import { existsSync, mkdirSync, utimesSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { computeDigest, type Digest, SHA256 } from '../../../src/common/digest.js';
import { Code, codeOf } from '../../../src/common/errors.js';
import { DiskBlobStore } from '../../../src/storage/disk-store.js';
import { tmpDir } from '../../../support/tmp.js';

/** Blobs written into a store's directory while no store has it open, as a previous run left them. */
function leftOnDisk(directory: string, contents: string[]): { digest: Digest; data: Buffer; file: string }[] {
  return contents.map((c) => {
    const data = Buffer.from(c);
    const digest = computeDigest(SHA256, data);
    const file = DiskBlobStore.blobFile(directory, digest);
    mkdirSync(path.dirname(file), { recursive: true });
    writeFileSync(file, data);
    return { digest, data, file };
  });
}

/** Holds a store's background index at its first slice until released. */
function heldIndex() {
  let release!: () => void;
  const released = new Promise<void>((r) => (release = r));
  return { betweenSlices: () => released, release };
}

describe('DiskBlobStore while its index is being built', () => {
  it('finds blobs the index has not reached on disk, and counts each once', async () => {
    const directory = tmpDir();
    const [a, b, c, d] = leftOnDisk(directory, ['alpha', 'beta', 'gamma', 'delta']);
    const absent = computeDigest(SHA256, Buffer.from('never stored'));
    const hold = heldIndex();
    const store = await DiskBlobStore.open({ directory, limitBytes: 1 << 20, betweenSlices: hold.betweenSlices });
    assert.equal(store.count, 0, 'the index has recorded nothing yet');

    assert.deepEqual(
      (await store.findMissing([a!.digest, b!.digest, absent])).map((m) => m.hash),
      [absent.hash],
    );
    assert.deepEqual(await store.get(c!.digest), c!.data);
    assert.equal(store.localPath(d!.digest), d!.file);
    assert.equal(store.localPath(absent), undefined);
    await assert.rejects(store.get(absent), (e: unknown) => codeOf(e) === Code.NOT_FOUND);
    assert.equal(store.count, 4);

    hold.release();
    const stats = await store.indexed();
    assert.deepEqual(stats, { blobs: 4, bytes: 5 + 4 + 5 + 5 }, 'the scan did not count again what lookups had found');
    assert.equal((await store.findMissing([absent])).length, 1);
    await store.close();
  });

  it('counts a write during the index once, whether or not its blob was already on disk', async () => {
    const directory = tmpDir();
    const [old] = leftOnDisk(directory, ['left by the last run']);
    const hold = heldIndex();
    const store = await DiskBlobStore.open({ directory, limitBytes: 1 << 20, betweenSlices: hold.betweenSlices });
    await store.put(old!.digest, old!.data);
    const fresh = Buffer.from('written while indexing');
    await store.put(computeDigest(SHA256, fresh), fresh);
    hold.release();
    assert.deepEqual(await store.indexed(), { blobs: 2, bytes: old!.data.length + fresh.length });
    await store.close();
  });

  it('evicts nothing until indexed, then the blobs accessed longest ago', async () => {
    const directory = tmpDir();
    // Four 40-byte blobs, accessed in this order long ago, in a store now limited to 100 bytes.
    const old = leftOnDisk(
      directory,
      ['1', '2', '3', '4'].map((c) => c.repeat(40)),
    );
    for (const [i, o] of old.entries()) utimesSync(o.file, 1_000_000 + i * 1000, 1_000_000);
    const hold = heldIndex();
    const store = await DiskBlobStore.open({ directory, limitBytes: 100, betweenSlices: hold.betweenSlices });
    const fresh = Buffer.from('5'.repeat(40));
    const freshDigest = computeDigest(SHA256, fresh);
    await store.put(freshDigest, fresh);
    assert.ok(
      old.every((o) => existsSync(o.file)),
      'over the limit, yet nothing is deleted before the index knows every blob',
    );

    hold.release();
    assert.deepEqual(await store.indexed(), { blobs: 2, bytes: 80 });
    assert.deepEqual(
      old.map((o) => existsSync(o.file)),
      [false, false, false, true],
      'the three accessed longest ago went',
    );
    assert.deepEqual(await store.findMissing([old[3]!.digest, freshDigest]), [], 'the write made while indexing stayed');
    await store.close();
  });

  it('stops indexing when closed, and says so to whoever waits for it', async () => {
    const directory = tmpDir();
    leftOnDisk(directory, ['x', 'y']);
    const hold = heldIndex();
    const store = await DiskBlobStore.open({ directory, limitBytes: 1 << 20, betweenSlices: hold.betweenSlices });
    const closed = store.close();
    hold.release();
    await closed;
    await assert.rejects(store.indexed(), (e: unknown) => codeOf(e) === Code.CANCELLED && /closed before its index was complete/.test((e as Error).message));
  });
});
