import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { readdirSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import {
  type Client,
  type ClientReadableStream,
  type ClientWritableStream,
  credentials,
  makeGenericClientConstructor,
  type ServiceDefinition,
} from '@grpc/grpc-js';
import { computeDigest, type Digest, SHA256, toWire } from '../../../src/common/digest.js';
import { Code } from '../../../src/common/errors.js';
import { ReapiClient } from '../../../src/reapi/reapi-client.js';
import { decodeReadResponse } from '../../../src/reapi/bytestream-codec.js';
import { blobResourceName, uploadResourceName } from '../../../src/reapi/resource-name.js';
import { ByteStreamService, type WriteResponse } from '../../../src/proto/google/bytestream/bytestream.js';
import { type BatchUpdateBlobsResponse, ContentAddressableStorageService } from '../../../src/proto/build/bazel/remote/execution/v2/remote_execution.js';
import { decodeDigest } from '../../../src/reapi/find-missing-codec.js';
import { readVarint } from '../../../src/reapi/wire.js';
import type { ReprServer } from '../../../src/server/server.js';
import { compileServerConfig } from '../../../src/config/config.js';
import { startInProcess } from '../../../support/servers.js';
import { tmpDir } from '../../../support/tmp.js';

/*
 * What a hostile or broken client can send to the CAS side: int64 fields at
 * the ends of their range, sizes no blob can have, and uploads it starts and
 * never finishes. Each must be refused with the right code and a message
 * naming the limit, and must cost the server no lasting disk, memory or
 * file descriptors.
 */

const KiB = 1024;
const MAX_BLOB = 64 * KiB;
const I64_MAX = 2n ** 63n - 1n;
const I64_MIN = -(2n ** 63n);

const sha = (b: Buffer | string): Digest => computeDigest(SHA256, Buffer.from(b));
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const openFds = () => readdirSync('/proc/self/fd').length;
const tmpFiles = (dataDir: string) => readdirSync(path.join(dataDir, 'cas', 'tmp'));

type ServiceErr = Error & { code?: number; details?: string };

async function rejectsWith(p: Promise<unknown>, code: Code, pattern: RegExp): Promise<void> {
  await assert.rejects(p, (e: ServiceErr) => {
    assert.equal(e.code, code, `expected ${Code[code]}, got ${Code[e.code ?? 2]}: ${e.details ?? e.message}`);
    assert.match(e.details ?? e.message, pattern);
    return true;
  });
}

/** A protobuf varint of a 64-bit two's-complement value, exactly as a client in any language would send it. */
function varint64(v: bigint): Buffer {
  let u = BigInt.asUintN(64, v);
  const out: number[] = [];
  do {
    let b = Number(u & 0x7fn);
    u >>= 7n;
    if (u) b |= 0x80;
    out.push(b);
  } while (u);
  return Buffer.from(out);
}

function lengthDelimited(field: number, data: Buffer): Buffer {
  return Buffer.concat([Buffer.from([(field << 3) | 2]), varint64(BigInt(data.length)), data]);
}

function readRequest(name: string, offset: bigint, limit: bigint): Buffer {
  return Buffer.concat([lengthDelimited(1, Buffer.from(name)), Buffer.from([2 << 3]), varint64(offset), Buffer.from([3 << 3]), varint64(limit)]);
}

function writeRequest(m: { name?: string; offset: bigint; finish?: boolean; data?: Buffer }): Buffer {
  return Buffer.concat([
    m.name ? lengthDelimited(1, Buffer.from(m.name)) : Buffer.alloc(0),
    Buffer.from([2 << 3]),
    varint64(m.offset),
    m.finish ? Buffer.from([3 << 3, 1]) : Buffer.alloc(0),
    m.data?.length ? lengthDelimited(10, m.data) : Buffer.alloc(0),
  ]);
}

/** ByteStream whose requests are sent as the bytes given: int64 values no JavaScript number can hold. */
const RawByteStream = makeGenericClientConstructor(
  {
    read: { ...ByteStreamService.read, requestSerialize: (b: Buffer) => b, responseDeserialize: decodeReadResponse },
    write: { ...ByteStreamService.write, requestSerialize: (b: Buffer) => b },
  } as unknown as ServiceDefinition,
  'google.bytestream.ByteStream',
);
type Raw = Client & {
  read(req: Buffer): ClientReadableStream<Buffer>;
  write(cb: (err: ServiceErr | null, res?: WriteResponse) => void): ClientWritableStream<Buffer>;
};
const rawClient = (address: string) => new RawByteStream(address, credentials.createInsecure()) as unknown as Raw;

/** BatchUpdateBlobs whose responses are read without the generated decoder's 2^53 limit. */
const RawBatchUpdate = makeGenericClientConstructor(
  {
    batchUpdateBlobs: { ...ContentAddressableStorageService.batchUpdateBlobs, responseDeserialize: decodeBatchUpdateResponse },
  } as unknown as ServiceDefinition,
  'build.bazel.remote.execution.v2.ContentAddressableStorage',
);

/** BatchUpdateBlobsResponse { repeated Response responses = 1 { Digest digest = 1; google.rpc.Status status = 2 { int32 code = 1; string message = 2; } } } */
function decodeBatchUpdateResponse(buf: Buffer): BatchUpdateBlobsResponse {
  const fields = (b: Buffer, each: (field: number, value: number | Buffer) => void) => {
    let pos = 0;
    while (pos < b.length) {
      let key: number;
      [key, pos] = readVarint(b, pos);
      let v: number;
      [v, pos] = readVarint(b, pos);
      if ((key & 7) === 2) {
        each(key >>> 3, b.subarray(pos, pos + v));
        pos += v;
      } else each(key >>> 3, v);
    }
  };
  const responses: BatchUpdateBlobsResponse['responses'] = [];
  fields(buf, (_, r) =>
    fields(r as Buffer, (f, v) => {
      if (f === 1) responses.push({ digest: decodeDigest(v as Buffer, 0, (v as Buffer).length), status: undefined });
      else {
        const status = { code: 0, message: '', details: [] };
        fields(v as Buffer, (sf, sv) => (sf === 1 ? (status.code = sv as number) : (status.message = (sv as Buffer).toString())));
        responses[responses.length - 1]!.status = status;
      }
    }),
  );
  return { responses };
}

async function rawRead(raw: Raw, req: Buffer): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of raw.read(req)) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

/** An open Write call: the test decides what to send and whether it ever ends. */
function openWrite(raw: Raw): { stream: ClientWritableStream<Buffer>; response: Promise<WriteResponse> } {
  let stream!: ClientWritableStream<Buffer>;
  const response = new Promise<WriteResponse>((resolve, reject) => {
    stream = raw.write((err, res) => (err ? reject(err) : resolve(res!)));
  });
  response.catch(() => undefined);
  return { stream, response };
}

/** The first `sent` bytes of an upload, then the stream stays open and silent. */
function stalledUpload(raw: Raw, name: string, data: Buffer, sent: number) {
  const w = openWrite(raw);
  w.stream.write(writeRequest({ name, offset: 0n, data: data.subarray(0, sent) }));
  return w;
}

/** The first `sent` bytes of an upload, then the client goes away without finish_write. */
async function abandonedUpload(raw: Raw, name: string, data: Buffer, sent: number): Promise<void> {
  const w = stalledUpload(raw, name, data, sent);
  w.stream.end();
  await rejectsWith(w.response, Code.INVALID_ARGUMENT, /without finish_write/);
}

/** Settles with the call's outcome, or with 'no answer' if the server says nothing for `ms`. */
function outcome(p: Promise<unknown>, ms = 2000): Promise<ServiceErr | 'ok' | 'no answer'> {
  return Promise.race([
    p.then(
      () => 'ok' as const,
      (e: ServiceErr) => e,
    ),
    sleep(ms).then(() => 'no answer' as const),
  ]);
}

function assertRefused(o: ServiceErr | 'ok' | 'no answer', code: Code, pattern: RegExp): void {
  assert.ok(typeof o !== 'string', `expected ${Code[code]}, got ${o}`);
  assert.equal(o.code, code, `expected ${Code[code]}, got ${Code[o.code ?? 2]}: ${o.details}`);
  assert.match(o.details ?? o.message, pattern);
}

function blobOf(size: number, seed: number): Buffer {
  const b = Buffer.alloc(size);
  for (let i = 0; i < size; i++) b[i] = (i * seed + (i >> 8)) & 0xff;
  return b;
}

describe('hostile input on the CAS side', () => {
  let dataDir: string;
  let server: ReprServer;
  let client: ReapiClient;
  let raw: Raw;

  before(async () => {
    dataDir = tmpDir();
    server = await startInProcess({ dataDir, execution: { enabled: false }, maxBlobSizeBytes: MAX_BLOB });
    client = new ReapiClient({ target: server.address });
    raw = rawClient(server.address);
  });
  after(async () => {
    raw.close();
    client.close();
    await server.stop();
  });

  describe('ByteStream.Read offsets and limits at the ends of int64', () => {
    const data = Buffer.from('0123456789');
    const name = () => blobResourceName('', sha(data));
    before(async () => {
      await client.write(sha(data), data);
    });

    it('answers OUT_OF_RANGE for an offset past the end, however large', async () => {
      for (const offset of [11n, 2n ** 53n + 1n, 2n ** 62n, I64_MAX]) {
        await rejectsWith(rawRead(raw, readRequest(name(), offset, 0n)), Code.OUT_OF_RANGE, /read_offset .* past the end of the 10-byte blob/);
      }
    });

    it('answers OUT_OF_RANGE for a negative offset', async () => {
      for (const offset of [-1n, -(2n ** 53n), I64_MIN]) {
        await rejectsWith(rawRead(raw, readRequest(name(), offset, 0n)), Code.OUT_OF_RANGE, /read_offset .*negative/);
      }
    });

    it('answers INVALID_ARGUMENT for a negative limit', async () => {
      for (const limit of [-1n, I64_MIN]) {
        await rejectsWith(rawRead(raw, readRequest(name(), 0n, limit)), Code.INVALID_ARGUMENT, /read_limit .*negative/);
      }
    });

    it('reads to the end when the limit is larger than the blob, however large', async () => {
      assert.deepEqual(await rawRead(raw, readRequest(name(), 0n, I64_MAX)), data);
      assert.deepEqual(await rawRead(raw, readRequest(name(), 3n, 2n ** 62n)), data.subarray(3));
      assert.deepEqual(await rawRead(raw, readRequest(name(), 10n, I64_MAX)), Buffer.alloc(0));
      assert.deepEqual(await rawRead(raw, readRequest(name(), 2n, 3n)), data.subarray(2, 5));
    });
  });

  describe('the maximum blob size', () => {
    it('is advertised as max_cas_blob_size_bytes', async () => {
      const caps = await client.getCapabilities();
      assert.equal(caps.cacheCapabilities?.maxCasBlobSizeBytes, MAX_BLOB);
    });

    it('refuses a Write declaring more, before any byte is stored', async () => {
      const name = uploadResourceName('', randomUUID(), { ...sha('x'), sizeBytes: 10 ** 15 });
      const w = stalledUpload(raw, name, Buffer.alloc(16 * KiB, 7), 16 * KiB);
      const o = await outcome(w.response);
      const leftovers = tmpFiles(dataDir);
      w.stream.end();
      assertRefused(o, Code.INVALID_ARGUMENT, /1000000000000000 bytes.*max_cas_blob_size_bytes \(65536\)/);
      assert.deepEqual(leftovers, [], 'nothing of the refused upload on disk');
    });

    it('accepts a blob of exactly the maximum and refuses one byte more', async () => {
      const exact = blobOf(MAX_BLOB, 3);
      assert.equal((await client.write(sha(exact), exact)).committedSize, MAX_BLOB);
      assert.deepEqual(await client.read(sha(exact)), exact);
      const over = blobOf(MAX_BLOB + 1, 5);
      await rejectsWith(client.write(sha(over), over), Code.INVALID_ARGUMENT, /65537 bytes.*max_cas_blob_size_bytes \(65536\)/);
      await rejectsWith(client.read(sha(over)), Code.NOT_FOUND, /not found/);
      assert.deepEqual(tmpFiles(dataDir), []);
    });

    it('refuses QueryWriteStatus for a blob over it', async () => {
      const name = uploadResourceName('', randomUUID(), { ...sha('y'), sizeBytes: MAX_BLOB + 1 });
      await rejectsWith(client.queryWriteStatus(name), Code.INVALID_ARGUMENT, /max_cas_blob_size_bytes/);
    });

    it('answers FindMissingBlobs with INVALID_ARGUMENT for sizes over it, negative or beyond int53', async () => {
      const find = (sizeBytes: number) =>
        new Promise((resolve, reject) =>
          client.cas.findMissingBlobs({ instanceName: '', blobDigests: [toWire(sha('ok')), { hash: 'c'.repeat(64), sizeBytes }], digestFunction: 0 }, (e, r) =>
            e ? reject(e) : resolve(r),
          ),
        );
      await rejectsWith(find(MAX_BLOB + 1), Code.INVALID_ARGUMENT, /blob_digests\[1\].*65537 bytes.*max_cas_blob_size_bytes \(65536\)/);
      await rejectsWith(find(-1), Code.INVALID_ARGUMENT, /blob_digests\[1\].*size_bytes -1.*negative/);
      await rejectsWith(find(2 ** 62), Code.INVALID_ARGUMENT, /blob_digests\[1\].*size_bytes/);
      assert.deepEqual(await client.findMissing([sha('ok'), { ...sha('z'), sizeBytes: MAX_BLOB }]), [{ ...sha('ok') }, { ...sha('z'), sizeBytes: MAX_BLOB }]);
    });

    it('answers BatchUpdateBlobs with INVALID_ARGUMENT per blob for sizes over it, negative or beyond int53, and stores the rest', async () => {
      const good = Buffer.from('batch neighbour of hostile digests');
      // The response names each digest as sent, 2^62 included, which the generated decoder cannot read.
      const cas = new RawBatchUpdate(server.address, credentials.createInsecure()) as unknown as typeof client.cas;
      const res = await new Promise<BatchUpdateBlobsResponse>((resolve, reject) =>
        cas.batchUpdateBlobs(
          {
            instanceName: '',
            digestFunction: 0,
            requests: [
              { digest: toWire(sha(good)), data: good, compressor: 0 },
              { digest: { hash: 'd'.repeat(64), sizeBytes: -1 }, data: Buffer.from('a'), compressor: 0 },
              { digest: { hash: 'e'.repeat(64), sizeBytes: 2 ** 62 }, data: Buffer.from('b'), compressor: 0 },
              { digest: { hash: 'f'.repeat(64), sizeBytes: MAX_BLOB + 1 }, data: Buffer.from('c'), compressor: 0 },
            ],
          },
          (e, r) => (e ? reject(e) : resolve(r!)),
        ),
      );
      assert.deepEqual(
        res.responses.map((r) => r.status?.code),
        [Code.OK, Code.INVALID_ARGUMENT, Code.INVALID_ARGUMENT, Code.INVALID_ARGUMENT],
      );
      assert.match(res.responses[1]!.status!.message, /requests\[1\].*size_bytes -1.*negative/);
      assert.match(res.responses[2]!.status!.message, /requests\[2\].*size_bytes/);
      assert.match(res.responses[3]!.status!.message, /requests\[3\].*65537 bytes.*max_cas_blob_size_bytes \(65536\)/);
      assert.equal(res.responses[1]!.digest?.hash, 'd'.repeat(64), 'each status names the digest it is about');
      assert.equal(res.responses[2]!.digest?.sizeBytes, 2 ** 62);
      assert.deepEqual(await client.read(sha(good)), good);
      cas.close();
    });
  });

  describe('ByteStream.Write offsets at the ends of int64', () => {
    const data = blobOf(8 * KiB, 11);
    const d = sha(data);

    for (const [offset, code, pattern] of [
      [2n ** 62n, Code.OUT_OF_RANGE, /write_offset .* past the end of the 8192-byte blob/],
      [I64_MAX, Code.OUT_OF_RANGE, /write_offset .* past the end of the 8192-byte blob/],
      [8193n, Code.OUT_OF_RANGE, /write_offset 8193 .* past the end of the 8192-byte blob/],
      [-1n, Code.OUT_OF_RANGE, /write_offset -1 is negative/],
      [I64_MIN, Code.OUT_OF_RANGE, /write_offset .*negative/],
    ] as const) {
      it(`refuses a first write_offset of ${offset} with ${Code[code]}, storing nothing`, async () => {
        const w = openWrite(raw);
        w.stream.write(writeRequest({ name: uploadResourceName('', randomUUID(), d), offset, finish: true, data: data.subarray(0, 100) }));
        w.stream.end();
        await rejectsWith(w.response, code, pattern);
        assert.deepEqual(tmpFiles(dataDir), []);
      });
    }

    it('refuses a later write_offset that does not continue the upload, keeping what was received', async () => {
      const name = uploadResourceName('', randomUUID(), d);
      const w = openWrite(raw);
      w.stream.write(writeRequest({ name, offset: 0n, data: data.subarray(0, 1000) }));
      w.stream.write(writeRequest({ offset: 2n ** 62n + 1000n, data: data.subarray(1000, 2000) }));
      w.stream.end();
      await rejectsWith(w.response, Code.INVALID_ARGUMENT, /write_offset .* does not continue the upload: expected 1000/);
      assert.deepEqual(await client.queryWriteStatus(name), { committedSize: 1000, complete: false });
      const uploadId = name.split('/')[1]!;
      assert.equal((await client.write(d, data, { uploadId, offset: 1000 })).committedSize, data.length);
      assert.deepEqual(await client.read(d), data);
    });
  });
});

describe('abandoned uploads', () => {
  const IDLE_MS = 2500;
  const MAX_UPLOADS = 3;
  let dataDir: string;
  let server: ReprServer;
  let client: ReapiClient;
  let raw: Raw;

  before(async () => {
    dataDir = tmpDir();
    server = await startInProcess({
      dataDir,
      execution: { enabled: false },
      maxBlobSizeBytes: MAX_BLOB,
      uploads: { maxCount: MAX_UPLOADS, maxBytes: 4 * MAX_BLOB, idleSeconds: IDLE_MS / 1000 },
    });
    client = new ReapiClient({ target: server.address });
    raw = rawClient(server.address);
    // Open the channels and let the server's lazily opened files settle before counting descriptors.
    await client.getCapabilities();
    const warm = Buffer.from('warm-up');
    await client.write(sha(warm), warm);
    await rawRead(raw, readRequest(blobResourceName('', sha(warm)), 0n, 0n));
  });
  after(async () => {
    raw.close();
    client.close();
    await server.stop();
  });

  it('keeps up to the bound resumable, evicts the oldest idle one for a new one, and holds no descriptor for them', async () => {
    const fds = openFds();
    const blobs = [0, 1, 2, 3].map((i) => blobOf(32 * KiB, 17 + i));
    const names = blobs.map((b) => uploadResourceName('', randomUUID(), sha(b)));
    for (let i = 0; i < MAX_UPLOADS; i++) await abandonedUpload(raw, names[i]!, blobs[i]!, 10 * KiB);
    for (let i = 0; i < MAX_UPLOADS; i++) assert.deepEqual(await client.queryWriteStatus(names[i]!), { committedSize: 10 * KiB, complete: false });
    assert.ok(openFds() <= fds, `abandoned uploads hold ${openFds() - fds} descriptors`);

    // One more: the oldest idle upload makes room, the others stay resumable.
    await abandonedUpload(raw, names[3]!, blobs[3]!, 10 * KiB);
    assert.deepEqual(await client.queryWriteStatus(names[0]!), { committedSize: 0, complete: false });
    for (const i of [1, 2, 3]) assert.deepEqual(await client.queryWriteStatus(names[i]!), { committedSize: 10 * KiB, complete: false });

    // Resuming after the descriptor was let go loses and corrupts nothing.
    const id = (n: string) => n.split('/')[1]!;
    assert.equal((await client.write(sha(blobs[1]!), blobs[1]!, { uploadId: id(names[1]!), offset: 10 * KiB })).committedSize, 32 * KiB);
    assert.deepEqual(await client.read(sha(blobs[1]!)), blobs[1]);
    assert.equal(tmpFiles(dataDir).length, 2, 'the two still-resumable uploads');
  });

  it('refuses a new upload with RESOURCE_EXHAUSTED while every slot is a live upload, and lets stalled ones go at the idle expiry', async () => {
    const fds = openFds();
    const blobs = [0, 1, 2, 3].map((i) => blobOf(16 * KiB, 29 + i));
    const names = blobs.map((b) => uploadResourceName('', randomUUID(), sha(b)));
    const live = [0, 1, 2].map((i) => stalledUpload(raw, names[i]!, blobs[i]!, 4 * KiB));
    await sleep(200);
    for (const i of [0, 1, 2]) assert.deepEqual(await client.queryWriteStatus(names[i]!), { committedSize: 4 * KiB, complete: false });

    const refused = stalledUpload(raw, names[3]!, blobs[3]!, 4 * KiB);
    assertRefused(await outcome(refused.response), Code.RESOURCE_EXHAUSTED, /3 uploads in progress.*uploads\.maxCount/);
    refused.stream.end();

    await sleep(1500); // past the writers' quiet period, before the idle expiry
    assert.ok(openFds() <= fds, `stalled uploads hold ${openFds() - fds} descriptors while quiet`);

    for (const w of live) assertRefused(await outcome(w.response, IDLE_MS + 2000), Code.DEADLINE_EXCEEDED, /no WriteRequest for 2\.5 s/);
    for (const w of live) w.stream.end();
    for (const i of [0, 1, 2]) assert.deepEqual(await client.queryWriteStatus(names[i]!), { committedSize: 0, complete: false });
    assert.deepEqual(tmpFiles(dataDir), []);
    assert.ok(openFds() <= fds);

    // The slots are free again.
    assert.equal((await client.write(sha(blobs[3]!), blobs[3]!)).committedSize, 16 * KiB);
  });
});

describe('bytes of uploads in progress', () => {
  const MAX_BYTES = 160 * KiB;
  let server: ReprServer;
  let client: ReapiClient;
  let raw: Raw;

  before(async () => {
    server = await startInProcess({
      dataDir: tmpDir(),
      execution: { enabled: false },
      maxBlobSizeBytes: MAX_BLOB,
      uploads: { maxCount: 10, maxBytes: MAX_BYTES, idleSeconds: 60 },
    });
    client = new ReapiClient({ target: server.address });
    raw = rawClient(server.address);
  });
  after(async () => {
    raw.close();
    client.close();
    await server.stop();
  });

  it('are bounded by the sizes the uploads declare: live ones are never evicted, idle ones make room', async () => {
    const big = [0, 1, 2].map((i) => blobOf(MAX_BLOB, 41 + i));
    const names = big.map((b) => uploadResourceName('', randomUUID(), sha(b)));
    const live = [0, 1].map((i) => stalledUpload(raw, names[i]!, big[i]!, 1 * KiB));
    await sleep(200);

    const third = stalledUpload(raw, names[2]!, big[2]!, 1 * KiB);
    assertRefused(await outcome(third.response), Code.RESOURCE_EXHAUSTED, /65536 bytes.*131072 of the 163840 bytes.*uploads\.maxBytes/);
    third.stream.end();

    const fits = blobOf(32 * KiB, 77);
    assert.equal((await client.write(sha(fits), fits)).committedSize, 32 * KiB);

    // The live uploads' clients go away: their uploads wait to be resumed, and the oldest makes room for a new one.
    for (const w of live) {
      w.stream.end();
      await rejectsWith(w.response, Code.INVALID_ARGUMENT, /without finish_write/);
    }
    assert.equal((await client.write(sha(big[2]!), big[2]!)).committedSize, MAX_BLOB);
    assert.deepEqual(await client.queryWriteStatus(names[0]!), { committedSize: 0, complete: false });
    assert.deepEqual(await client.queryWriteStatus(names[1]!), { committedSize: 1 * KiB, complete: false });
  });
});

describe('upload limits in the configuration', () => {
  it('refuses a byte bound smaller than the largest blob, which could then never be uploaded', () => {
    assert.throws(
      () => compileServerConfig({ maxBlobSizeBytes: '1GiB', uploads: { maxBytes: '512MiB' } }),
      (e: ServiceErr) => e.code === Code.INVALID_ARGUMENT && /uploads\.maxBytes \(536870912\) must be at least maxBlobSizeBytes \(1073741824\)/.test(e.message),
    );
    const c = compileServerConfig({});
    assert.equal(c.maxBlobSizeBytes, 4 * 1024 ** 3);
    assert.deepEqual(c.uploads, { maxCount: 1000, maxBytes: 8 * 1024 ** 3, idleSeconds: 60 });
  });
});
