import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { computeDigest, SHA256 } from '../../../src/common/digest.js';
import { Code, codeOf } from '../../../src/common/errors.js';
import { silentLogger } from '../../../src/common/logger.js';
import { ReapiClient } from '../../../src/reapi/reapi-client.js';
import type { ReprServer } from '../../../src/server/server.js';
import { DiskBlobStore } from '../../../src/storage/disk-store.js';
import { WorkerCas } from '../../../src/worker/worker-cas.js';
import { startInProcess } from '../../../support/servers.js';
import { tmpDir } from '../../../support/tmp.js';

describe("a worker's local CAS cache over a remote CAS", () => {
  let server: ReprServer;
  let dataDir: string;
  let client: ReapiClient;
  let cas: WorkerCas;

  before(async () => {
    dataDir = tmpDir();
    // A plain disk CAS (no memory tier), so the test can reach its files.
    server = await startInProcess({ dataDir, execution: { enabled: false }, storage: { cas: { type: 'disk', directory: path.join(dataDir, 'cas') } } });
    client = new ReapiClient({ target: server.address });
    cas = await WorkerCas.open({ target: server.address, cacheDir: tmpDir(), cacheBytes: 64 * 1024 * 1024, log: silentLogger() });
  });
  after(async () => {
    await cas.close();
    client.close();
    await server.stop();
  });

  it('fetches missing inputs in one go into local files, then answers locally', async () => {
    const blobs = Array.from({ length: 50 }, (_, i) => Buffer.from(`input ${i}`));
    const digests = blobs.map((b) => computeDigest(SHA256, b));
    await client.batchUpdate(blobs.map((data, i) => ({ digest: digests[i]!, data })));
    const store = cas.forInstance('');
    assert.ok(digests.every((d) => store.localPath?.(d) === undefined));
    await store.localize!(digests);
    for (const [i, d] of digests.entries()) {
      const p = store.localPath?.(d);
      assert.ok(p, `input ${i} has a local file`);
    }
    assert.deepEqual(await store.findMissing(digests), []);
  });

  it('refuses bytes from the remote that do not match their digest, and caches nothing', async () => {
    const good = Buffer.from('the real content');
    const d = computeDigest(SHA256, good);
    await client.write(d, good);
    // Corrupt the remote's copy behind its back (same length, other bytes).
    writeFileSync(DiskBlobStore.blobFile(path.join(dataDir, 'cas'), d), Buffer.from('the fake content'));
    const store = cas.forInstance('');
    await assert.rejects(store.localize!([d]), (e: unknown) => codeOf(e) === Code.INVALID_ARGUMENT && /mismatch/.test((e as Error).message));
    assert.equal(store.localPath?.(d), undefined, 'nothing was cached');
    await assert.rejects(store.get(d), (e: unknown) => codeOf(e) === Code.INVALID_ARGUMENT);
  });
});

describe("a worker's local CAS cache, asked what is missing", () => {
  it('answers from local files first and asks the remote only about the rest', async () => {
    const dataDir = tmpDir();
    const server = await startInProcess({ dataDir, execution: { enabled: false } });
    const client = new ReapiClient({ target: server.address });
    const cas = await WorkerCas.open({ target: server.address, cacheDir: tmpDir(), cacheBytes: 64 * 1024 * 1024, log: silentLogger() });
    try {
      const blobs = Array.from({ length: 5 }, (_, i) => Buffer.from(`cached ${i}`));
      const digests = blobs.map((b) => computeDigest(SHA256, b));
      await client.batchUpdate(blobs.map((data, i) => ({ digest: digests[i]!, data })));
      const store = cas.forInstance('');
      await store.localize!(digests);
      // With the remote gone, only the local cache can answer.
      await server.stop();
      assert.deepEqual(await store.findMissing(digests), []);
      const elsewhere = computeDigest(SHA256, Buffer.from('not cached'));
      await assert.rejects(store.findMissing([...digests, elsewhere]), (e: unknown) => codeOf(e) === Code.UNAVAILABLE);
    } finally {
      await cas.close();
      client.close();
      await server.stop();
    }
  });
});
