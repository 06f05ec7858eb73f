import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { ReapiClient } from '../../../src/reapi/reapi-client.js';
import { BLAKE3, computeDigest, type Digest, type DigestFunction, SHA256 } from '../../../src/common/digest.js';
import { Code, codeOf } from '../../../src/common/errors.js';
import type { ReprServer } from '../../../src/server/server.js';
import { readAll } from '../../../src/storage/blob-store.js';
import { RemoteBlobStore } from '../../../src/storage/remote-store.js';
import { startInProcess } from '../../../support/servers.js';
import { tmpDir } from '../../../support/tmp.js';
import { blobStoreContract } from './contract.js';

const servers: ReprServer[] = [];
const stores: RemoteBlobStore[] = [];

async function server(): Promise<ReprServer> {
  const s = await startInProcess({ dataDir: tmpDir(), execution: { enabled: false } });
  servers.push(s);
  return s;
}

function storeFor(s: ReprServer): RemoteBlobStore {
  const store = new RemoteBlobStore({ target: `grpc://${s.address}`, instanceName: 'main' });
  stores.push(store);
  return store;
}

// Stores first: a call they leave open would otherwise hold the server's shutdown for its grace period.
after(async () => {
  for (const s of stores) await s.close();
  for (const s of servers) await s.stop(1000);
});

// A server per subject: the contract expects each `make` to start from an empty store.
blobStoreContract('remote (gRPC to a repr server)', { persistent: true }, async () => {
  const s = await server();
  return { store: storeFor(s), reopen: async () => storeFor(s) };
});

const digestOf = (b: Buffer, fn = SHA256): Digest => computeDigest(fn, b);

describe('RemoteBlobStore', () => {
  let srv: ReprServer;
  let store: RemoteBlobStore;

  before(async () => {
    srv = await server();
    store = storeFor(srv);
  });

  it('fetches ~300 small blobs and one of 5 MiB with getMany', async () => {
    const small = Array.from({ length: 300 }, (_, i) => randomBytes(100 + i * 37));
    const big = randomBytes(5 * 1024 * 1024);
    const blake = Buffer.from('a blob under another digest function');
    const all = [...small, big];
    for (const b of all) await store.put(digestOf(b), b);
    await store.put(digestOf(blake, BLAKE3), blake);

    const wanted = [...all.map((b) => digestOf(b)), digestOf(blake, BLAKE3), digestOf(Buffer.alloc(0)), digestOf(small[0]!)];
    const got = await store.getMany(wanted);
    assert.equal(got.size, all.length + 2);
    for (const b of all) assert.ok(got.get(digestOf(b).hash)?.equals(b));
    assert.deepEqual(got.get(digestOf(blake, BLAKE3).hash), blake);
    assert.equal(got.get(digestOf(Buffer.alloc(0)).hash)?.length, 0);
  });

  it('packs getMany batches within the byte budget', async () => {
    // A small budget forces many batches, including ones of a single blob.
    const tight = new RemoteBlobStore({ target: srv.address, instanceName: 'main' }, { maxBatchBytes: 64 * 1024 });
    stores.push(tight);
    const blobs = Array.from({ length: 40 }, (_, i) => randomBytes(1000 + i * 1500));
    for (const b of blobs) await tight.put(digestOf(b), b);
    const got = await tight.getMany(blobs.map((b) => digestOf(b)));
    for (const b of blobs) assert.ok(got.get(digestOf(b).hash)?.equals(b));
  });

  it('reports NOT_FOUND naming the digest, for small and large blobs; getMany leaves missing ones out', async () => {
    const absentSmall = digestOf(Buffer.from('never uploaded'));
    const absentLarge = digestOf(Buffer.alloc(2 * 1024 * 1024, 3));
    for (const d of [absentSmall, absentLarge]) {
      await assert.rejects(store.get(d), (e: unknown) => {
        assert.equal(codeOf(e), Code.NOT_FOUND);
        assert.match((e as Error).message, new RegExp(`${d.hash}/${d.sizeBytes} not found`));
        return true;
      });
      await assert.rejects(store.read(d), (e: unknown) => codeOf(e) === Code.NOT_FOUND);
    }
    const present = Buffer.from('present for getMany');
    await store.put(digestOf(present), present);
    const got = await store.getMany([digestOf(present), absentSmall, absentLarge]);
    assert.deepEqual([...got.keys()], [digestOf(present).hash], 'missing blobs are left out, the rest still returned');
  });

  it('stores and streams large blobs through ByteStream, by range', async () => {
    const big = randomBytes(3 * 1024 * 1024 + 17);
    const d = digestOf(big);
    await store.put(d, big);
    assert.ok((await store.get(d)).equals(big));
    const range = await readAll(await store.read(d, 1024 * 1024 - 5, 2 * 1024 * 1024));
    assert.ok(range.equals(big.subarray(1024 * 1024 - 5, 3 * 1024 * 1024 - 5)));
  });

  it('stops the remote stream when a reader gives up early', async () => {
    const big = randomBytes(8 * 1024 * 1024);
    const d = digestOf(big);
    await store.put(d, big);
    const stream = await store.read(d);
    const first = await new Promise<Buffer>((resolve) => stream.once('data', resolve));
    assert.ok(first.length > 0);
    stream.destroy();
    await new Promise((r) => stream.once('close', r));
    // The store is still usable afterwards.
    assert.ok((await store.get(d)).equals(big));
  });

  it('finishes a streamed upload of a blob the server already has', async () => {
    const data = randomBytes(200_000);
    const d = digestOf(data);
    await store.put(d, data);
    const w = store.beginWrite(d);
    for (let off = 0; off < data.length; off += 10_000) {
      await w.write(data.subarray(off, off + 10_000));
      await new Promise((r) => setTimeout(r, 1));
    }
    assert.equal(w.written, data.length);
    await w.commit();
  });

  it("surfaces the server's refusal of bytes that do not match the digest", async () => {
    const d = digestOf(Buffer.from('the real content'));
    await assert.rejects(store.put(d, Buffer.from('the fake content')), (e: unknown) => codeOf(e) === Code.INVALID_ARGUMENT);
    const w = store.beginWrite(d);
    await w.write(Buffer.from('the fake content'));
    await assert.rejects(w.commit(), (e: unknown) => codeOf(e) === Code.INVALID_ARGUMENT && /digest mismatch/.test((e as Error).message));
    assert.equal((await store.findMissing([d])).length, 1);
  });

  it('splits FindMissingBlobs into requests of at most 10,000 digests, per digest function', async () => {
    const requests: { size: number; fns: Set<DigestFunction>; fn: DigestFunction }[] = [];
    class RecordingClient extends ReapiClient {
      override findMissing(digests: readonly Digest[], fn?: DigestFunction): Promise<Digest[]> {
        requests.push({ size: digests.length, fns: new Set(digests.map((d) => d.fn)), fn: fn ?? this.fn });
        return super.findMissing(digests, fn);
      }
    }
    const client = new RecordingClient({ target: srv.address, instanceName: 'main' });
    const recorded = new RemoteBlobStore(client);
    const present = Buffer.from('one of many');
    await recorded.put(digestOf(present), present);
    await recorded.put(digestOf(present, BLAKE3), present);
    const absent = Array.from({ length: 25_000 }, (_, i) => digestOf(Buffer.from(`absent ${i}`), i % 2 ? BLAKE3 : SHA256));
    const asked = [...absent.slice(0, 12_000), digestOf(present), ...absent.slice(12_000), digestOf(present, BLAKE3)];
    const missing = await recorded.findMissing(asked);
    assert.deepEqual(missing, absent, 'absent digests, in the order asked, with their own function');
    assert.equal(requests.length, 4, '12,501 of each function: two requests each');
    for (const r of requests) {
      assert.ok(r.size <= 10_000);
      assert.deepEqual([...r.fns], [r.fn], 'one digest function per request, and the request carries it');
    }
    await recorded.close();
    client.close();
  });

  it("uses a caller's client without closing it", async () => {
    const client = new ReapiClient({ target: srv.address, instanceName: 'main' });
    const borrowed = new RemoteBlobStore(client);
    const data = Buffer.from('through a borrowed client');
    await borrowed.put(digestOf(data), data);
    await borrowed.close();
    assert.deepEqual(await client.findMissing([digestOf(data)]), []);
    client.close();
  });
});
