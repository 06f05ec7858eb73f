import type { StoreConfig } from './store-config.js';
import type { BlobStore } from './blob-store.js';
import { DiskBlobStore } from './disk-store.js';
import { MemoryBlobStore } from './memory-store.js';
import { PostgresBlobStore } from './postgres-store.js';
import { MeteredBlobStore, type StoreMeter } from './metered-store.js';
import { ReadCachingBlobStore } from './read-caching-store.js';
import { RemoteBlobStore } from './remote-store.js';
import { VerifyingBlobStore } from './verifying-store.js';

/** Builds a stack of stores from a config tree, leaves first; with a meter, the top counts traffic and the backends evictions. */
export async function createStore(config: StoreConfig, meter?: StoreMeter): Promise<BlobStore> {
  const store = await build(config, meter, []);
  return meter ? new MeteredBlobStore(store, meter) : store;
}

async function build(config: StoreConfig, meter: StoreMeter | undefined, at: string[]): Promise<BlobStore> {
  // A backend's tier is its path through the tiers above it; decorators without tiers add nothing.
  const tier = at.length > 0 ? at.join('.') : config.type;
  const onEvict = meter && ((bytes: number) => meter.evicted(tier, bytes));
  switch (config.type) {
    case 'memory': {
      const store = new MemoryBlobStore(config.limitBytes, onEvict);
      meter?.holds(tier, () => ({ bytes: store.totalBytes, blobs: store.count }));
      return store;
    }
    case 'disk': {
      const store = await DiskBlobStore.open({
        directory: config.directory,
        limitBytes: config.limitBytes,
        fsync: config.fsync,
        ...(onEvict ? { onEvict } : {}),
      });
      meter?.holds(tier, () => ({ bytes: store.totalBytes, blobs: store.count }));
      return store;
    }
    case 'read-caching':
      return new ReadCachingBlobStore(await build(config.fast, meter, [...at, 'fast']), await build(config.slow, meter, [...at, 'slow']), {
        maxBlobBytes: config.maxBlobBytes,
        ...(config.findMissing ? { findMissing: config.findMissing } : {}),
      });
    case 'verifying':
      return new VerifyingBlobStore(await build(config.backend, meter, at));
    case 'remote':
      return new RemoteBlobStore({ target: config.target, instanceName: config.instanceName, ...(config.tls ? { tls: config.tls } : {}) });
    case 'postgres':
      return PostgresBlobStore.open({ url: config.url, ...(config.table ? { table: config.table } : {}) });
  }
}
