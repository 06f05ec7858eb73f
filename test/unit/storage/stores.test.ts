import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { computeDigest, type Digest, SHA256 } from '../../../src/common/digest.js';
import { ForwardingBlobStore } from '../../../src/storage/blob-store.js';
import { DiskBlobStore } from '../../../src/storage/disk-store.js';
import { MemoryBlobStore } from '../../../src/storage/memory-store.js';
import { ReadCachingBlobStore } from '../../../src/storage/read-caching-store.js';
import { createStore } from '../../../src/storage/store-factory.js';
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
  store: await createStore({ type: 'read-caching', maxBlobBytes: LIMIT, fast: { type: 'memory', limitBytes: LIMIT / 2 }, slow: { type: 'memory', limitBytes: LIMIT } }),
  limitBytes: LIMIT,
}));

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
