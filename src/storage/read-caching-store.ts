import type { Readable } from 'node:stream';
import { type Digest, digestKey } from '../common/digest.js';
import { codeOf, Code, isNotFound } from '../common/errors.js';
import { ForwardingBlobStore, type BlobStore, type IndexedStats, whenIndexed } from './blob-store.js';
import type { FindMissingRule } from './store-config.js';

export interface ReadCachingOptions {
  /**
   * Blobs larger than this are streamed from the slow store without being
   * copied into the fast one: one large blob would otherwise evict many small
   * hot ones and cost a full extra pass over its bytes. Default 16 MiB.
   */
  maxBlobBytes?: number;
  /** Default `slow` (see FindMissingRule). */
  findMissing?: FindMissingRule;
}

/**
 * A fast, size-limited store in front of a slow one. Reads are served from
 * the fast store and fill it on a miss; writes go to the slow store only (the
 * source of truth), so the fast one never holds anything the slow one lacks
 * except what it has since evicted.
 */
export class ReadCachingBlobStore extends ForwardingBlobStore {
  private readonly filling = new Map<string, Promise<Buffer>>();
  private readonly maxBlobBytes: number;
  private readonly findMissingRule: FindMissingRule;

  constructor(
    private readonly fast: BlobStore,
    slow: BlobStore,
    options: ReadCachingOptions = {},
  ) {
    super(slow);
    this.maxBlobBytes = options.maxBlobBytes ?? 16 * 1024 * 1024;
    this.findMissingRule = options.findMissing ?? 'slow';
  }

  /**
   * By default the slow store alone answers: where it is local too, checking
   * the fast store first doubled the cost of a 10,000-digest FindMissingBlobs
   * for no answer the slow store would not give.
   */
  override async findMissing(digests: readonly Digest[]): Promise<Digest[]> {
    if (this.findMissingRule === 'slow') return this.inner.findMissing(digests);
    const notFast = await this.fast.findMissing(digests);
    return notFast.length === 0 ? [] : this.inner.findMissing(notFast);
  }

  /**
   * The slow store's file first: it is the one that keeps the blob longest.
   * The fast store's when the slow one has none (a remote store).
   */
  override localPath(digest: Digest): string | undefined {
    return this.inner.localPath?.(digest) ?? this.fast.localPath?.(digest);
  }

  override async get(digest: Digest): Promise<Buffer> {
    try {
      return await this.fast.get(digest);
    } catch (e) {
      if (!isNotFound(e)) throw e;
    }
    // Callers that miss on the same blob at once share one slow read and one
    // fill (a build's parallel lookups of a hot entry would otherwise each
    // read it from disk).
    const key = digestKey(digest);
    let pending = this.filling.get(key);
    if (!pending) {
      pending = (async () => {
        const data = await this.inner.get(digest);
        if (data.length <= this.maxBlobBytes) await this.fill(digest, data);
        return data;
      })().finally(() => this.filling.delete(key));
      this.filling.set(key, pending);
    }
    return pending;
  }

  override async read(digest: Digest, offset?: number, limit?: number): Promise<Readable> {
    try {
      return await this.fast.read(digest, offset, limit);
    } catch (e) {
      if (!isNotFound(e)) throw e;
    }
    if (digest.sizeBytes <= this.maxBlobBytes && (await this.fillStreaming(digest))) return this.fast.read(digest, offset, limit);
    return this.inner.read(digest, offset, limit);
  }

  /** Streams a blob from the slow store into the fast one, without holding it in memory. */
  private async fillStreaming(digest: Digest): Promise<boolean> {
    const source = await this.inner.read(digest);
    const w = this.fast.beginWrite(digest);
    try {
      for await (const chunk of source) await w.write(chunk as Buffer);
      await w.commit();
      return true;
    } catch (e) {
      source.destroy();
      await w.abort();
      if (codeOf(e) === Code.RESOURCE_EXHAUSTED) return false;
      throw e;
    }
  }

  /** Copies a blob into the fast store; false if it cannot hold it. */
  private async fill(digest: Digest, data: Buffer): Promise<boolean> {
    try {
      await this.fast.put(digest, data);
      return true;
    } catch (e) {
      if (codeOf(e) === Code.RESOURCE_EXHAUSTED) return false;
      throw e;
    }
  }

  override async indexed(): Promise<IndexedStats> {
    const [fast, slow] = await Promise.all([whenIndexed(this.fast), whenIndexed(this.inner)]);
    return { blobs: fast.blobs + slow.blobs, bytes: fast.bytes + slow.bytes };
  }

  override async close(): Promise<void> {
    await this.fast.close?.();
    await super.close();
  }
}
