import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { BLAKE3, computeDigest, type Digest, SHA256, toWire } from '../../../src/common/digest.js';
import { Code } from '../../../src/common/errors.js';
import { ReapiClient } from '../../../src/reapi/reapi-client.js';
import { compressBuffer } from '../../../src/reapi/zstd.js';
import { uploadResourceName } from '../../../src/reapi/resource-name.js';
import { ActionResult, Compressor_Value, Directory, DigestFunction_Value, Tree } from '../../../src/proto/build/bazel/remote/execution/v2/remote_execution.js';
import type { ReprServer } from '../../../src/server/server.js';
import { startInProcess } from '../../../support/servers.js';
import { tmpDir } from '../../../support/tmp.js';

const MAX_BATCH = 64 * 1024;

type Callback<T> = (err: (Error & { code?: number }) | null, res?: T) => void;
function call<T>(fn: (cb: Callback<T>) => void): Promise<T> {
  return new Promise((resolve, reject) => fn((err, res) => (err ? reject(err) : resolve(res as T))));
}

async function rejectsWith(p: Promise<unknown>, code: Code, pattern: RegExp): Promise<void> {
  await assert.rejects(p, (e: Error & { code?: number; details?: string }) => {
    assert.equal(e.code, code, `expected ${Code[code]}, got ${Code[e.code ?? 2]}: ${e.details ?? e.message}`);
    assert.match(e.details ?? e.message, pattern);
    return true;
  });
}

const sha = (b: Buffer | string): Digest => computeDigest(SHA256, Buffer.from(b));

describe('REAPI services over gRPC', () => {
  let server: ReprServer;
  let client: ReapiClient;
  let b3: ReapiClient;
  let other: ReapiClient;

  before(async () => {
    server = await startInProcess({
      dataDir: tmpDir(),
      instanceNames: ['', 'main', 'other'],
      maxBatchTotalSizeBytes: MAX_BATCH,
      execution: { enabled: false },
    });
    client = new ReapiClient({ target: server.address, instanceName: 'main', writeChunkBytes: 16 * 1024 });
    b3 = new ReapiClient({ target: server.address, instanceName: 'main', digestFunction: BLAKE3 });
    other = new ReapiClient({ target: server.address, instanceName: 'other' });
  });
  after(async () => {
    client.close();
    b3.close();
    other.close();
    await server.stop();
  });

  describe('Capabilities', () => {
    it('advertises 2.0 through 2.3, SHA256 and BLAKE3, zstd, updatable cache, and no execution without executors', async () => {
      const caps = await client.getCapabilities();
      assert.deepEqual([caps.lowApiVersion?.major, caps.lowApiVersion?.minor], [2, 0]);
      assert.deepEqual([caps.highApiVersion?.major, caps.highApiVersion?.minor], [2, 3]);
      assert.deepEqual(caps.cacheCapabilities?.digestFunctions, [DigestFunction_Value.SHA256, DigestFunction_Value.BLAKE3]);
      assert.equal(caps.cacheCapabilities?.actionCacheUpdateCapabilities?.updateEnabled, true);
      assert.equal(caps.cacheCapabilities?.maxBatchTotalSizeBytes, MAX_BATCH);
      assert.deepEqual(caps.cacheCapabilities?.supportedCompressors, [Compressor_Value.ZSTD]);
      assert.equal(caps.executionCapabilities?.execEnabled, false);
    });

    it('rejects an unknown instance name', async () => {
      const stranger = new ReapiClient({ target: server.address, instanceName: 'nope' });
      await rejectsWith(stranger.getCapabilities(), Code.INVALID_ARGUMENT, /unknown instance name "nope"/);
      stranger.close();
    });
  });

  describe('ContentAddressableStorage', () => {
    it('FindMissingBlobs reports only absent blobs, never the empty blob', async () => {
      const present = Buffer.from('find-missing present');
      await client.write(sha(present), present);
      const missing = await client.findMissing([sha(present), sha('find-missing absent'), sha('')]);
      assert.deepEqual(
        missing.map((d) => d.hash),
        [sha('find-missing absent').hash],
      );
    });

    it('FindMissingBlobs rejects malformed digests and unsupported digest functions', async () => {
      await rejectsWith(
        call((cb) => client.cas.findMissingBlobs({ instanceName: 'main', blobDigests: [{ hash: 'xyz', sizeBytes: 1 }], digestFunction: 0 }, cb)),
        Code.INVALID_ARGUMENT,
        /blob_digests\[0\].*invalid sha256 hash "xyz"/,
      );
      await rejectsWith(
        call((cb) => client.cas.findMissingBlobs({ instanceName: 'main', blobDigests: [{ hash: 'a'.repeat(64), sizeBytes: -4 }], digestFunction: 0 }, cb)),
        Code.INVALID_ARGUMENT,
        /size_bytes -4/,
      );
      await rejectsWith(
        call((cb) => client.cas.findMissingBlobs({ instanceName: 'main', blobDigests: [], digestFunction: DigestFunction_Value.MD5 }, cb)),
        Code.INVALID_ARGUMENT,
        /unsupported digest function MD5/,
      );
    });

    it('BatchUpdateBlobs stores blobs (plain and zstd) and reports a per-blob status for bad ones', async () => {
      const good = Buffer.from('batch good');
      const zipped = Buffer.alloc(5000, 'z');
      const res = await call<{ responses: { digest?: { hash: string }; status?: { code: number; message: string } }[] }>((cb) =>
        client.cas.batchUpdateBlobs(
          {
            instanceName: 'main',
            digestFunction: 0,
            requests: [
              { digest: toWire(sha(good)), data: good, compressor: Compressor_Value.IDENTITY },
              { digest: toWire(sha('claimed')), data: Buffer.from('actual'), compressor: Compressor_Value.IDENTITY },
              { digest: toWire(sha(zipped)), data: compressBuffer(zipped), compressor: Compressor_Value.ZSTD },
              { digest: toWire(sha('x')), data: Buffer.from('x'), compressor: Compressor_Value.BROTLI },
            ],
          },
          cb,
        ),
      );
      const codes = res.responses.map((r) => r.status?.code);
      assert.deepEqual(codes, [Code.OK, Code.INVALID_ARGUMENT, Code.OK, Code.INVALID_ARGUMENT]);
      assert.match(res.responses[1]!.status!.message, /size mismatch|digest mismatch/);
      assert.match(res.responses[3]!.status!.message, /unsupported compressor BROTLI/);
      assert.deepEqual(await client.read(sha(zipped)), zipped);
      assert.deepEqual(
        await client.findMissing([sha('claimed')]),
        [sha('claimed')].map((d) => ({ ...d })),
      );
    });

    it('BatchUpdateBlobs over max_batch_total_size_bytes is INVALID_ARGUMENT', async () => {
      const big = Buffer.alloc(MAX_BATCH + 1, 1);
      await rejectsWith(
        call((cb) =>
          client.cas.batchUpdateBlobs({ instanceName: 'main', digestFunction: 0, requests: [{ digest: toWire(sha(big)), data: big, compressor: 0 }] }, cb),
        ),
        Code.INVALID_ARGUMENT,
        /max_batch_total_size_bytes/,
      );
    });

    it('BatchReadBlobs returns data, NOT_FOUND per missing blob, zstd when acceptable, and refuses oversize batches', async () => {
      const small = Buffer.from('batch read');
      const large = Buffer.alloc(10_000, 'q');
      await client.write(sha(small), small);
      await client.write(sha(large), large);
      const res = await call<{ responses: { data: Buffer; compressor: number; status?: { code: number } }[] }>((cb) =>
        client.cas.batchReadBlobs(
          {
            instanceName: 'main',
            digestFunction: 0,
            digests: [toWire(sha(small)), toWire(sha('nowhere')), toWire(sha(large))],
            acceptableCompressors: [Compressor_Value.ZSTD],
          },
          cb,
        ),
      );
      assert.deepEqual(
        res.responses.map((r) => r.status?.code),
        [Code.OK, Code.NOT_FOUND, Code.OK],
      );
      assert.deepEqual(Buffer.from(res.responses[0]!.data), small);
      assert.equal(res.responses[2]!.compressor, Compressor_Value.ZSTD);
      assert.ok(res.responses[2]!.data.length < large.length);
      await rejectsWith(
        call((cb) =>
          client.cas.batchReadBlobs(
            { instanceName: 'main', digestFunction: 0, digests: [{ hash: 'b'.repeat(64), sizeBytes: MAX_BATCH + 1 }], acceptableCompressors: [] },
            cb,
          ),
        ),
        Code.INVALID_ARGUMENT,
        /max_batch_total_size_bytes/,
      );
    });

    it('GetTree walks a tree breadth first without duplicates, in pages, and resumes from a page token', async () => {
      // root -> a, b; a -> shared; b -> shared (the shared directory must appear once).
      const put = async (d: Directory) => {
        const data = Buffer.from(Directory.encode(d).finish());
        const digest = sha(data);
        await client.write(digest, data);
        return digest;
      };
      const leaf = Directory.fromPartial({ files: [{ name: 'f', digest: toWire(sha('leaf file')), isExecutable: false }] });
      const shared = await put(leaf);
      const a = await put(
        Directory.fromPartial({ directories: [{ name: 'shared', digest: toWire(shared) }], files: [{ name: 'a.txt', digest: toWire(sha('a')) }] }),
      );
      const b = await put(Directory.fromPartial({ directories: [{ name: 'shared', digest: toWire(shared) }] }));
      const missing = sha('not a stored directory');
      const root = await put(
        Directory.fromPartial({
          directories: [
            { name: 'a', digest: toWire(a) },
            { name: 'b', digest: toWire(b) },
            { name: 'gone', digest: toWire(missing) },
          ],
        }),
      );

      const getTree = (pageSize: number, pageToken = '') =>
        new Promise<{ directories: Directory[]; nextPageToken: string }[]>((resolve, reject) => {
          const pages: { directories: Directory[]; nextPageToken: string }[] = [];
          const s = client.cas.getTree({ instanceName: 'main', rootDigest: toWire(root), pageSize, pageToken, digestFunction: 0 });
          s.on('data', (p) => pages.push(p));
          s.on('error', reject);
          s.on('end', () => resolve(pages));
        });
      const all = await getTree(0);
      assert.equal(all.length, 1);
      assert.equal(all[0]!.directories.length, 4, 'root, a, b and shared once; the missing one left out');
      assert.equal(all[0]!.nextPageToken, '');

      const paged = await getTree(2);
      assert.deepEqual(
        paged.map((p) => p.directories.length),
        [2, 2],
      );
      assert.notEqual(paged[0]!.nextPageToken, '');
      assert.equal(paged[1]!.nextPageToken, '');
      const resumed = await getTree(2, paged[0]!.nextPageToken);
      assert.deepEqual(
        resumed.map((p) => p.directories),
        [paged[1]!.directories],
      );

      await rejectsWith(getTree(0, 'bogus'), Code.INVALID_ARGUMENT, /page_token/);
      const absentRoot = client.cas.getTree({ instanceName: 'main', rootDigest: toWire(sha('no root')), pageSize: 0, pageToken: '', digestFunction: 0 });
      await rejectsWith(
        new Promise((res, rej) => {
          absentRoot.on('error', rej);
          absentRoot.on('end', res);
          absentRoot.resume();
        }),
        Code.NOT_FOUND,
        /root_digest/,
      );
    });
  });

  describe('ByteStream', () => {
    it('writes in chunks and reads back whole, by offset and limit', async () => {
      const data = Buffer.alloc(200_000);
      for (let i = 0; i < data.length; i++) data[i] = (i * 7) & 0xff;
      const d = sha(data);
      const res = await client.write(d, data);
      assert.equal(res.committedSize, data.length);
      assert.deepEqual(await client.read(d), data);
      assert.deepEqual(await client.read(d, { offset: 1000, limit: 5000 }), data.subarray(1000, 6000));
      assert.deepEqual(await client.read(d, { offset: data.length }), Buffer.alloc(0));
      await rejectsWith(client.read(d, { offset: data.length + 1 }), Code.OUT_OF_RANGE, /past the end/);
      await rejectsWith(client.read(d, { offset: -1 }), Code.OUT_OF_RANGE, /negative/);
    });

    it('reads and writes BLAKE3 blobs and zstd compressed-blobs', async () => {
      const data = Buffer.alloc(300_000, 'compressible ');
      const d = computeDigest(BLAKE3, data);
      await b3.write(d, compressBuffer(data), { compressor: 'zstd' });
      assert.deepEqual(await b3.read(d), data);
      const z = await b3.read(d, { compressor: 'zstd' });
      assert.ok(z.length < data.length / 10);
      const { decompressBounded } = await import('../../../src/reapi/zstd.js');
      assert.deepEqual(decompressBounded(z, data.length), data);
    });

    it('rejects a digest mismatch, a size mismatch and bad resource names, storing nothing', async () => {
      const claimed = sha('what the client claims');
      await rejectsWith(client.write(claimed, Buffer.from('what the client sends!!')), Code.INVALID_ARGUMENT, /digest mismatch|size mismatch/);
      const sameSize = Buffer.from('what the client claimz');
      await rejectsWith(client.write(claimed, sameSize), Code.INVALID_ARGUMENT, /digest mismatch/);
      await rejectsWith(client.write(claimed, Buffer.from('short')), Code.INVALID_ARGUMENT, /size mismatch/);
      assert.equal((await client.findMissing([claimed])).length, 1);
      await rejectsWith(client.read(sha('never written')), Code.NOT_FOUND, /not found/);
      const readBad = (client.byteStream.read as (r: unknown) => NodeJS.ReadableStream).bind(client.byteStream);
      const s = readBad({ resourceName: 'main/blobs/nothex/12', readOffset: 0, readLimit: 0 });
      await rejectsWith(
        new Promise((res, rej) => {
          s.on('error', rej);
          s.on('end', res);
          s.resume();
        }),
        Code.INVALID_ARGUMENT,
        /invalid read resource name/,
      );
      const zipBomb = compressBuffer(Buffer.alloc(1_000_000));
      await rejectsWith(client.write(sha('tiny'), zipBomb, { compressor: 'zstd' }), Code.INVALID_ARGUMENT, /more than the 4 bytes/);
    });

    it('finishes at once, with the full size, when the blob already exists', async () => {
      const data = Buffer.alloc(100_000, 3);
      const d = sha(data);
      await client.write(d, data);
      const again = await client.write(d, data);
      assert.equal(again.committedSize, data.length);
    });

    it('resumes an interrupted upload from QueryWriteStatus', async () => {
      const data = Buffer.alloc(96 * 1024);
      for (let i = 0; i < data.length; i++) data[i] = (i * 13) & 0xff;
      const d = sha(data);
      const uploadId = randomUUID();
      const name = uploadResourceName('main', uploadId, d);
      // Send the first half without finish_write and close the stream.
      await rejectsWith(
        new Promise((resolve, reject) => {
          const w = (client.byteStream.write as (cb: Callback<unknown>) => NodeJS.WritableStream).call(client.byteStream, (err: Error | null, res: unknown) =>
            err ? reject(err) : resolve(res),
          );
          (w as unknown as { write(m: unknown): void }).write({ resourceName: name, writeOffset: 0, finishWrite: false, data: data.subarray(0, 48 * 1024) });
          w.end();
        }),
        Code.INVALID_ARGUMENT,
        /without finish_write; resume/,
      );
      const status = await client.queryWriteStatus(name);
      assert.deepEqual(status, { committedSize: 48 * 1024, complete: false });
      await rejectsWith(client.write(d, data, { uploadId, offset: 1024 }), Code.INVALID_ARGUMENT, /expected 49152/);
      const res = await client.write(d, data, { uploadId, offset: 48 * 1024 });
      assert.equal(res.committedSize, data.length);
      assert.deepEqual(await client.queryWriteStatus(name), { committedSize: data.length, complete: true });
      assert.deepEqual(await client.read(d), data);
    });

    it('accepts concurrent uploads of the same blob', async () => {
      const data = Buffer.alloc(512 * 1024, 9);
      const d = sha(data);
      const results = await Promise.all(Array.from({ length: 6 }, () => client.write(d, data)));
      for (const r of results) assert.equal(r.committedSize, data.length);
      assert.deepEqual(await client.read(d), data);
    });
  });

  describe('ActionCache', () => {
    const stdout = Buffer.from('compiled ok\n');
    const out = Buffer.from('object code');
    const result = (): ActionResult =>
      ActionResult.fromPartial({
        outputFiles: [{ path: 'out/a.o', digest: toWire(sha(out)), isExecutable: false }],
        exitCode: 0,
        stdoutDigest: toWire(sha(stdout)),
      });

    it('stores and returns results, per instance name', async () => {
      await client.write(sha(stdout), stdout);
      await client.write(sha(out), out);
      const action = sha('action 1');
      await rejectsWith(client.getActionResult(action), Code.NOT_FOUND, /no action result/);
      await client.updateActionResult(action, result());
      const got = await client.getActionResult(action);
      assert.equal(got.outputFiles[0]!.path, 'out/a.o');
      await rejectsWith(other.getActionResult(action), Code.NOT_FOUND, /no action result/);
    });

    it('inlines stdout when asked', async () => {
      const action = sha('action inline');
      await client.updateActionResult(action, result());
      const got = await call<ActionResult>((cb) =>
        client.ac.getActionResult(
          { instanceName: 'main', actionDigest: toWire(action), inlineStdout: true, inlineStderr: false, inlineOutputFiles: ['out/a.o'], digestFunction: 0 },
          cb,
        ),
      );
      assert.deepEqual(Buffer.from(got.stdoutRaw), stdout);
      assert.deepEqual(Buffer.from(got.outputFiles[0]!.contents), out);
    });

    it('does not return a result whose outputs are gone from the CAS', async () => {
      const action = sha('action with missing output');
      const r = result();
      r.outputFiles.push({
        path: 'never/uploaded',
        digest: toWire(sha('never uploaded output')),
        isExecutable: false,
        contents: Buffer.alloc(0),
        nodeProperties: undefined,
      });
      await client.updateActionResult(action, r);
      await rejectsWith(client.getActionResult(action), Code.NOT_FOUND, /no longer in the CAS/);
    });

    it('checks the files inside output directory trees too', async () => {
      const inTree = sha('file inside a tree, never uploaded');
      const tree = Buffer.from(Tree.encode(Tree.fromPartial({ root: { files: [{ name: 'x', digest: toWire(inTree) }] } })).finish());
      await client.write(sha(tree), tree);
      const action = sha('action with tree');
      await client.updateActionResult(action, ActionResult.fromPartial({ outputDirectories: [{ path: 'd', treeDigest: toWire(sha(tree)) }] }));
      await rejectsWith(client.getActionResult(action), Code.NOT_FOUND, /no longer in the CAS/);
      const content = Buffer.from('file inside a tree, never uploaded');
      await client.write(inTree, content);
      assert.equal((await client.getActionResult(action)).outputDirectories[0]!.path, 'd');
    });

    it('rejects malformed requests', async () => {
      await rejectsWith(
        call((cb) =>
          client.ac.updateActionResult(
            { instanceName: 'main', actionDigest: toWire(sha('a')), actionResult: undefined, resultsCachePolicy: undefined, digestFunction: 0 },
            cb,
          ),
        ),
        Code.INVALID_ARGUMENT,
        /action_result is missing/,
      );
      await rejectsWith(
        client.updateActionResult(sha('bad result'), ActionResult.fromPartial({ outputFiles: [{ path: 'p', digest: { hash: 'zz', sizeBytes: 1 } }] })),
        Code.INVALID_ARGUMENT,
        /output file "p"/,
      );
      await rejectsWith(
        call((cb) =>
          client.ac.getActionResult(
            { instanceName: 'main', actionDigest: undefined, inlineStdout: false, inlineStderr: false, inlineOutputFiles: [], digestFunction: 0 },
            cb,
          ),
        ),
        Code.INVALID_ARGUMENT,
        /action_digest is missing/,
      );
    });
  });
});

describe('server restart', () => {
  it('keeps blobs and action results on disk across a restart', async () => {
    const dataDir = tmpDir();
    const blob = Buffer.from('persisted blob');
    const action = sha('persisted action');
    let server = await startInProcess({ dataDir });
    let c = new ReapiClient({ target: server.address });
    await c.write(sha(blob), blob);
    await c.updateActionResult(action, ActionResult.fromPartial({ outputFiles: [{ path: 'p', digest: toWire(sha(blob)) }], exitCode: 0 }));
    c.close();
    await server.stop();

    server = await startInProcess({ dataDir });
    c = new ReapiClient({ target: server.address });
    try {
      assert.deepEqual(await c.read(sha(blob)), blob);
      assert.equal((await c.getActionResult(action)).outputFiles[0]!.path, 'p');
    } finally {
      c.close();
      await server.stop();
    }
  });
});
