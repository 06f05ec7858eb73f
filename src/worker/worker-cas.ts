import type { Interceptor } from '@grpc/grpc-js';
import type { Digest } from '../common/digest.js';
import { Code, codeOf } from '../common/errors.js';
import type { Logger } from '../common/logger.js';
import type { BlobStore } from '../storage/blob-store.js';
import { DiskBlobStore } from '../storage/disk-store.js';
import { ReadCachingBlobStore } from '../storage/read-caching-store.js';
import { RemoteBlobStore } from '../storage/remote-store.js';
import { VerifyingBlobStore } from '../storage/verifying-store.js';

/** Blobs larger than this are streamed into the cache one by one instead of batched in memory. */
const BATCH_BLOB_BYTES = 4 * 1024 * 1024;

/**
 * A worker's local disk cache (size-limited, LRU) in front of the remote
 * CAS. Reads are served locally and fill the cache on a miss; writes
 * (outputs) go to the remote CAS, which is the source of truth. `localize`
 * fetches an action's missing inputs in batches so that the executor can
 * hard-link every input from the cache.
 */
export class CachedRemoteStore extends ReadCachingBlobStore {
  constructor(
    private readonly local: BlobStore,
    private readonly remote: RemoteBlobStore,
    private readonly log: Logger,
    /** Blobs up to this size are kept locally; the executor links inputs only from local files. */
    maxCachedBlobBytes: number,
  ) {
    super(local, remote, maxCachedBlobBytes);
  }

  /** The cache's file, which the executor hard-links (the remote has no local files). */
  override localPath(digest: Digest): string | undefined {
    return this.local.localPath?.(digest);
  }

  /** Local first: here the slow store is a round trip away, and most inputs are cached. */
  override async findMissing(digests: readonly Digest[]): Promise<Digest[]> {
    const notLocal = await this.local.findMissing(digests);
    return notLocal.length === 0 ? [] : this.remote.findMissing(notLocal);
  }

  override async localize(digests: readonly Digest[]): Promise<void> {
    const unique = [...new Map(digests.map((d) => [d.hash, d])).values()].filter((d) => d.sizeBytes > 0);
    const missing = await this.local.findMissing(unique);
    if (missing.length === 0) return;
    const small = missing.filter((d) => d.sizeBytes <= BATCH_BLOB_BYTES);
    const large = missing.filter((d) => d.sizeBytes > BATCH_BLOB_BYTES);
    const fetched = small.length > 0 ? await this.remote.getMany(small) : new Map<string, Buffer>();
    await Promise.all(
      small.map(async (d) => {
        const data = fetched.get(d.hash);
        if (data) await this.keep(() => this.local.put(d, data));
      }),
    );
    // Streamed (read fills the cache without holding the blob in memory).
    for (const d of large) {
      await this.keep(async () => {
        (await this.read(d)).destroy();
      });
    }
  }

  /** A blob the cache cannot take (too big, or gone remotely) is left for `get` to fetch or report. */
  private async keep(fill: () => Promise<void>): Promise<void> {
    try {
      await fill();
    } catch (e) {
      const code = codeOf(e);
      if (code !== Code.RESOURCE_EXHAUSTED && code !== Code.NOT_FOUND) throw e;
      this.log.debug({ err: e }, 'input not cached locally');
    }
  }

  /** The local cache is shared by every instance name's store, so it is closed by the worker, not here. */
  override async close(): Promise<void> {
    await this.remote.close?.();
  }
}

export interface WorkerCasOptions {
  /** grpc://host:port of the CAS. */
  target: string;
  cacheDir: string;
  cacheBytes: number;
  log: Logger;
  interceptors?: Interceptor[];
}

/** One local cache, and a remote-backed store per instance name on top of it. */
export class WorkerCas {
  private readonly stores = new Map<string, CachedRemoteStore>();

  private constructor(
    private readonly o: WorkerCasOptions,
    private readonly local: BlobStore,
  ) {}

  static async open(o: WorkerCasOptions): Promise<WorkerCas> {
    // Verified on the way in: a corrupt or lying remote must not poison the
    // cache that every later action on this worker links its inputs from.
    return new WorkerCas(o, new VerifyingBlobStore(await DiskBlobStore.open({ directory: o.cacheDir, limitBytes: o.cacheBytes })));
  }

  forInstance(instanceName: string): BlobStore {
    let s = this.stores.get(instanceName);
    if (!s) {
      s = new CachedRemoteStore(this.local, new RemoteBlobStore({ target: this.o.target, instanceName, ...(this.o.interceptors ? { interceptors: this.o.interceptors } : {}) }), this.o.log, Math.floor(this.o.cacheBytes / 4));
      this.stores.set(instanceName, s);
    }
    return s;
  }

  async close(): Promise<void> {
    for (const s of this.stores.values()) await s.close();
    await this.local.close?.();
  }
}
