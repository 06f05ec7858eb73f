import type { Digest } from '../common/digest.js';
import { Code, codeOf } from '../common/errors.js';
import type { Logger } from '../common/logger.js';
import type { DialOptions, DialTls } from '../grpc/dial.js';
import { type BlobStore, ForwardingBlobStore } from '../storage/blob-store.js';
import { ReadCachingBlobStore } from '../storage/read-caching-store.js';
import { RemoteBlobStore } from '../storage/remote-store.js';
import { createStore } from '../storage/store-factory.js';

/** Blobs larger than this are streamed into the cache one by one instead of batched in memory. */
const BATCH_BLOB_BYTES = 4 * 1024 * 1024;

/**
 * Fetches an action's missing inputs into the local cache in batches, so
 * that the executor can hard-link every input from it; everything else is
 * the read-caching store it wraps.
 */
class PrefetchingStore extends ForwardingBlobStore {
  constructor(
    cached: BlobStore,
    private readonly local: BlobStore,
    private readonly remote: RemoteBlobStore,
    private readonly log: Logger,
  ) {
    super(cached);
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
        (await this.inner.read(d)).destroy();
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

  /** The local cache is shared by every instance name's store, so it is closed by WorkerCas, not here. */
  override async close(): Promise<void> {
    await this.remote.close();
  }
}

export interface WorkerCasOptions extends DialOptions {
  /** grpc://host:port or grpcs://host:port of the CAS. */
  target: string;
  cacheDir: string;
  cacheBytes: number;
  log: Logger;
}

/**
 * A worker's local disk cache (size-limited, LRU) in front of the remote
 * CAS: one cache, and a remote-backed store per instance name on top of it.
 * Reads are served locally and fill the cache on a miss; writes (outputs)
 * go to the remote CAS, which is the source of truth.
 */
export class WorkerCas {
  private readonly stores = new Map<string, PrefetchingStore>();
  private o: WorkerCasOptions;

  private constructor(
    o: WorkerCasOptions,
    private readonly local: BlobStore,
  ) {
    this.o = o;
  }

  static async open(o: WorkerCasOptions): Promise<WorkerCas> {
    // Verified on the way in: a corrupt or lying remote must not poison the
    // cache that every later action on this worker links its inputs from.
    const local = await createStore({ type: 'verifying', backend: { type: 'disk', directory: o.cacheDir, limitBytes: o.cacheBytes, fsync: false } });
    return new WorkerCas(o, local);
  }

  forInstance(instanceName: string): BlobStore {
    let s = this.stores.get(instanceName);
    if (!s) {
      const { cacheDir: _cacheDir, cacheBytes, log, ...connection } = this.o;
      const remote = new RemoteBlobStore({ ...connection, instanceName });
      const cached = new ReadCachingBlobStore(this.local, remote, {
        // Blobs up to this size are kept locally; the executor links inputs only from local files.
        maxBlobBytes: Math.floor(cacheBytes / 4),
        // Most inputs are cached, and the remote is a round trip away.
        findMissing: 'fast-first',
      });
      s = new PrefetchingStore(cached, this.local, remote, log);
      this.stores.set(instanceName, s);
    }
    return s;
  }

  /**
   * Sends later fetches and uploads to another CAS (that of the scheduler a
   * worker moved to), keeping the local cache: a blob is the same wherever
   * it came from. Only between actions: stores handed out before are closed.
   */
  async retarget(target: string, tls?: DialTls): Promise<void> {
    if (target === this.o.target) return;
    const { tls: _old, ...rest } = this.o;
    this.o = { ...rest, target, ...(tls ? { tls } : {}) };
    const stale = [...this.stores.values()];
    this.stores.clear();
    for (const s of stale) await s.close();
  }

  async close(): Promise<void> {
    for (const s of this.stores.values()) await s.close();
    await this.local.close?.();
  }
}
