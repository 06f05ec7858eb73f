import type { StoreConfig } from './store-config.js';
import type { BlobStore } from './blob-store.js';
import { DiskBlobStore } from './disk-store.js';
import { MemoryBlobStore } from './memory-store.js';
import { ReadCachingBlobStore } from './read-caching-store.js';
import { RemoteBlobStore } from './remote-store.js';
import { VerifyingBlobStore } from './verifying-store.js';

/** Builds a stack of stores from a config tree, leaves first. */
export async function createStore(config: StoreConfig): Promise<BlobStore> {
  switch (config.type) {
    case 'memory':
      return new MemoryBlobStore(config.limitBytes);
    case 'disk':
      return DiskBlobStore.open({ directory: config.directory, limitBytes: config.limitBytes, fsync: config.fsync });
    case 'read-caching':
      return new ReadCachingBlobStore(await createStore(config.fast), await createStore(config.slow), {
        maxBlobBytes: config.maxBlobBytes,
        ...(config.findMissing ? { findMissing: config.findMissing } : {}),
      });
    case 'verifying':
      return new VerifyingBlobStore(await createStore(config.backend));
    case 'remote':
      return new RemoteBlobStore({ target: config.target, instanceName: config.instanceName, ...(config.tls ? { tls: config.tls } : {}) });
  }
}
