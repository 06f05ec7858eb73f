import { DiskBlobStore } from '../../../src/storage/disk-store.js';
import { MemoryBlobStore } from '../../../src/storage/memory-store.js';
import { ReadCachingBlobStore } from '../../../src/storage/read-caching-store.js';
import { createStore } from '../../../src/storage/store-factory.js';
import { tmpDir } from '../../helpers/tmp.js';
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
