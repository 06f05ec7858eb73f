import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { computeDigest, SHA256 } from '../../src/common/digest.js';
import { ReapiClient } from '../../src/reapi/reapi-client.js';
import { seedDiskStore, storedDigests } from '../../support/seed-store.js';
import { startServerProcess, type ServerProcess } from '../../support/servers.js';
import { waitForLog } from '../../support/spawn-server.js';
import { removeInBackground } from '../../support/tmp.js';

const SEEDED = 50_000;

const logRecord = (server: ServerProcess, msg: string) => waitForLog(server, (rec) => rec.msg === msg, 120_000);

/**
 * A server restarted on a CAS that already holds many blobs listens before
 * it has indexed them (stat'ing 50,000 files takes a second or more), and answers
 * correctly meanwhile: what is on disk is found, what it is given is kept.
 */
describe('a server started on a CAS of 50,000 blobs', () => {
  let dataDir: string;
  const servers: ServerProcess[] = [];
  before(() => {
    dataDir = mkdtempSync(path.join(os.tmpdir(), 'repr-index-'));
    seedDiskStore(path.join(dataDir, 'cas'), SEEDED, () => undefined);
  });
  after(async () => {
    for (const s of servers) await s.stop('SIGKILL').catch(() => undefined);
    removeInBackground(dataDir);
  });

  it('answers FindMissing, reads and uploads while indexing, and then counts every blob once', async () => {
    // The index reaches the last fan-out directory last.
    const onDisk = storedDigests(path.join(dataDir, 'cas'), 'ff', 40);
    const server = await startServerProcess(['--data-dir', dataDir, '--cache-only'], 60_000);
    servers.push(server);
    assert.equal((await logRecord(server, 'repr server listening')).casIndexed, false, 'listening before the CAS was indexed');
    const client = new ReapiClient({ target: server.address });
    try {
      const absent = computeDigest(SHA256, randomBytes(32));
      const missing = await client.findMissing([...onDisk.slice(0, 20), absent]);
      assert.deepEqual(
        missing.map((d) => d.hash),
        [absent.hash],
        'blobs on disk are found, an absent one is missing',
      );
      const read = await client.read(onDisk[30]!);
      assert.equal(createHash('sha256').update(read).digest('hex'), onDisk[30]!.hash);
      const [batchRead] = await client.batchRead([onDisk[31]!]);
      assert.equal(batchRead!.code, 0);
      // One new blob, and one already on disk that the index has not reached: the count grows by one.
      const fresh = randomBytes(32);
      const uploads = await client.batchUpdate([
        { digest: computeDigest(SHA256, fresh), data: fresh },
        { digest: onDisk[31]!, data: batchRead!.data },
      ]);
      assert.deepEqual(
        uploads.map((u) => u.code),
        [0, 0],
      );
      const answeredAt = Date.now();

      const indexed = await logRecord(server, 'CAS indexed');
      assert.ok(Date.parse(String(indexed.time)) > answeredAt, `every answer came before the index was complete (${indexed.seconds} s)`);
      assert.equal(indexed.blobs, SEEDED + 1);
      assert.equal(indexed.bytes, (SEEDED + 1) * 32);
      assert.deepEqual(await client.findMissing([...onDisk, computeDigest(SHA256, fresh)]), []);
    } finally {
      client.close();
      await server.stop();
    }
  });

  it('stops cleanly in the middle of its index', async () => {
    const server = await startServerProcess(['--data-dir', dataDir, '--cache-only'], 60_000);
    servers.push(server);
    // One answered call first: the signal handlers are installed only after the listening line is printed.
    const client = new ReapiClient({ target: server.address });
    assert.equal((await client.findMissing(storedDigests(path.join(dataDir, 'cas'), '00', 5))).length, 0);
    client.close();
    assert.equal(await server.stop(), 0);
    const text = server.logs.join('');
    assert.ok(!text.includes('CAS indexed'), 'stopped before the index was complete');
    assert.ok(!/"level":(50|60)/.test(text), `no error logged:\n${text}`);
  });
});
