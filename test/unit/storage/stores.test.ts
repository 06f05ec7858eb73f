import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { computeDigest, type Digest, SHA256 } from '../../../src/common/digest.js';
import { ForwardingBlobStore } from '../../../src/storage/blob-store.js';
import { DiskBlobStore } from '../../../src/storage/disk-store.js';
import { MemoryBlobStore } from '../../../src/storage/memory-store.js';
import { ReadCachingBlobStore } from '../../../src/storage/read-caching-store.js';
import { createStore } from '../../../src/storage/store-factory.js';
import { VerifyingBlobStore } from '../../../src/storage/verifying-store.js';
import { tmpDir } from '../../../support/tmp.js';
import { blobStoreContract } from './contract.js';

const LIMIT = 1024 * 1024;

blobStoreContract('memory', { limitBytes: LIMIT }, async () => ({ store: new MemoryBlobStore(LIMIT) }));

blobStoreContract('disk', { limitBytes: LIMIT, persistent: true }, async () => {
  const directory = tmpDir();
  const store = await DiskBlobStore.open({ directory, limitBytes: LIMIT });
  return {
    store,
    reopen: async () => DiskBlobStore.open({ directory, limitBytes: LIMIT }),
  };
});

blobStoreContract('disk with fsync', { limitBytes: LIMIT }, async () => {
  const directory = tmpDir();
  return { store: await DiskBlobStore.open({ directory, limitBytes: LIMIT, fsync: true }) };
});

// The fast store is smaller than the slow one: eviction happens in the fast
// store first, and the slow store must still answer.
blobStoreContract('read-caching(memory over disk)', { limitBytes: LIMIT, persistent: true }, async () => {
  const directory = tmpDir();
  const slow = () => DiskBlobStore.open({ directory, limitBytes: LIMIT });
  return {
    store: new ReadCachingBlobStore(new MemoryBlobStore(LIMIT / 4), await slow()),
    reopen: async () => new ReadCachingBlobStore(new MemoryBlobStore(LIMIT / 4), await slow()),
  };
});

blobStoreContract('read-caching(memory over memory), built from config', { limitBytes: LIMIT }, async () => ({
  store: await createStore({
    type: 'read-caching',
    maxBlobBytes: LIMIT,
    fast: { type: 'memory', limitBytes: LIMIT / 2 },
    slow: { type: 'memory', limitBytes: LIMIT },
  }),
  limitBytes: LIMIT,
}));

// The shape of the server's default CAS, with limits small enough to evict.
blobStoreContract('verifying(read-caching(memory over disk)), built from config', { limitBytes: LIMIT, persistent: true }, async () => {
  const directory = tmpDir();
  const open = () =>
    createStore({
      type: 'verifying',
      backend: {
        type: 'read-caching',
        maxBlobBytes: LIMIT,
        fast: { type: 'memory', limitBytes: LIMIT / 4 },
        slow: { type: 'disk', directory, limitBytes: LIMIT, fsync: false },
      },
    });
  return { store: await open(), reopen: open };
});

blobStoreContract('read-caching(memory over memory), FindMissing asking the fast store first', { limitBytes: LIMIT }, async () => ({
  store: new ReadCachingBlobStore(new MemoryBlobStore(LIMIT / 2), new MemoryBlobStore(LIMIT), { findMissing: 'fast-first' }),
}));

describe('stores built from config', () => {
  it('makes a verifying node refuse bytes that do not match their digest', async () => {
    const store = await createStore({ type: 'verifying', backend: { type: 'memory', limitBytes: LIMIT } });
    assert.ok(store instanceof VerifyingBlobStore);
    const d = computeDigest(SHA256, Buffer.from('real'));
    await assert.rejects(store.put(d, Buffer.from('fake')), /digest mismatch/);
  });
});

describe('ReadCachingBlobStore FindMissing rule', () => {
  class CountingFindMissing extends ForwardingBlobStore {
    asked: number[] = [];
    override findMissing(ds: readonly Digest[]): Promise<Digest[]> {
      this.asked.push(ds.length);
      return super.findMissing(ds);
    }
  }
  const blobs = ['a', 'b', 'c'].map((s) => Buffer.from(s));
  const digests = blobs.map((b) => computeDigest(SHA256, b));

  async function tiers() {
    const fast = new CountingFindMissing(new MemoryBlobStore(LIMIT));
    const slow = new CountingFindMissing(new MemoryBlobStore(LIMIT));
    // 'a' only in the fast store (evicted from the slow one), 'b' in both, 'c' in neither.
    await fast.put(digests[0]!, blobs[0]!);
    await fast.put(digests[1]!, blobs[1]!);
    await slow.put(digests[1]!, blobs[1]!);
    return { fast, slow };
  }

  it('asks the slow store alone by default: a blob only the fast store holds is missing', async () => {
    const { fast, slow } = await tiers();
    const store = new ReadCachingBlobStore(fast, slow);
    assert.deepEqual(
      (await store.findMissing(digests)).map((d) => d.hash),
      [digests[0]!.hash, digests[2]!.hash],
    );
    assert.deepEqual(fast.asked, []);
    assert.deepEqual(slow.asked, [3]);
  });

  it('with fast-first, asks the slow store only about what the fast one lacks', async () => {
    const { fast, slow } = await tiers();
    const store = new ReadCachingBlobStore(fast, slow, { findMissing: 'fast-first' });
    assert.deepEqual(
      (await store.findMissing(digests)).map((d) => d.hash),
      [digests[2]!.hash],
    );
    assert.deepEqual(fast.asked, [3]);
    assert.deepEqual(slow.asked, [1]);
    slow.asked = [];
    assert.deepEqual(await store.findMissing(digests.slice(0, 2)), []);
    assert.deepEqual(slow.asked, [], 'no round trip when the fast store has everything');
  });

  it('is a field of the read-caching config node', async () => {
    const x = Buffer.from('x');
    const dx = computeDigest(SHA256, x);
    const missingAfterSlowEvicts = async (findMissing: 'slow' | 'fast-first') => {
      // A slow store that holds one byte: putting 'y' evicts 'x', which a read had copied into the fast store.
      const store = await createStore({
        type: 'read-caching',
        maxBlobBytes: LIMIT,
        findMissing,
        fast: { type: 'memory', limitBytes: LIMIT },
        slow: { type: 'memory', limitBytes: 1 },
      });
      await store.put(dx, x);
      await store.get(dx);
      await store.put(computeDigest(SHA256, Buffer.from('y')), Buffer.from('y'));
      return (await store.findMissing([dx])).length;
    };
    assert.equal(await missingAfterSlowEvicts('slow'), 1);
    assert.equal(await missingAfterSlowEvicts('fast-first'), 0);
  });
});

describe('ReadCachingBlobStore local files', () => {
  it("offers the slow store's file, else the fast store's", async () => {
    const data = Buffer.from('linked input');
    const d = computeDigest(SHA256, data);
    const disk = await DiskBlobStore.open({ directory: tmpDir(), limitBytes: LIMIT });
    await disk.put(d, data);
    const overDisk = new ReadCachingBlobStore(new MemoryBlobStore(LIMIT), disk);
    assert.equal(overDisk.localPath(d), disk.localPath(d));
    const fastDisk = await DiskBlobStore.open({ directory: tmpDir(), limitBytes: LIMIT });
    const overMemory = new ReadCachingBlobStore(fastDisk, new MemoryBlobStore(LIMIT));
    await overMemory.put(d, data);
    assert.equal(overMemory.localPath(d), undefined, 'not yet in the fast store');
    await overMemory.get(d);
    assert.equal(overMemory.localPath(d), fastDisk.localPath(d));
    assert.ok(overMemory.localPath(d));
  });
});

describe('ReadCachingBlobStore under concurrent misses', () => {
  it('reads a blob from the slow store once for callers that miss on it together', async () => {
    class Counting extends ForwardingBlobStore {
      gets = 0;
      override async get(d: Digest): Promise<Buffer> {
        this.gets++;
        await new Promise((r) => setTimeout(r, 20));
        return super.get(d);
      }
    }
    const slow = new Counting(new MemoryBlobStore(LIMIT));
    const store = new ReadCachingBlobStore(new MemoryBlobStore(LIMIT), slow);
    const data = Buffer.from('hot entry');
    const d = computeDigest(SHA256, data);
    await store.put(d, data);
    const got = await Promise.all(Array.from({ length: 10 }, () => store.get(d)));
    assert.ok(got.every((b) => b.equals(data)));
    assert.equal(slow.gets, 1);
    await store.get(d);
    assert.equal(slow.gets, 1, 'later reads come from the fast store');
  });
});
