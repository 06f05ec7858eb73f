import { Readable } from 'node:stream';
import { type Digest, digestKey, digestString } from '../common/digest.js';
import { notFound, resourceExhausted } from '../common/errors.js';
import { type BlobStore, type BlobWriter, bufferingWriter } from './blob-store.js';
import { LruIndex } from './lru-index.js';
import { resolveRange } from './range.js';

/** Blobs in process memory, bounded by size with LRU eviction. */
export class MemoryBlobStore implements BlobStore {
  private readonly blobs = new Map<string, Buffer>();
  private readonly lru: LruIndex;

  /** `onEvict` is told the size of each blob evicted to stay under the limit. */
  constructor(limitBytes: number, onEvict?: (bytes: number) => void) {
    this.lru = new LruIndex(limitBytes, onEvict);
  }

  get totalBytes(): number {
    return this.lru.totalBytes;
  }

  get count(): number {
    return this.lru.count;
  }

  async findMissing(digests: readonly Digest[]): Promise<Digest[]> {
    return digests.filter((d) => !this.lru.touch(digestKey(d)));
  }

  async get(digest: Digest): Promise<Buffer> {
    const key = digestKey(digest);
    const blob = this.blobs.get(key);
    if (!blob) throw notFound(`blob ${digestString(digest)} not found`);
    this.lru.touch(key);
    return blob;
  }

  async read(digest: Digest, offset?: number, limit?: number): Promise<Readable> {
    const blob = await this.get(digest);
    const { start, end } = resolveRange(blob.length, offset, limit);
    return Readable.from([blob.subarray(start, end)], { objectMode: false });
  }

  async put(digest: Digest, data: Buffer): Promise<void> {
    // Keep our own copy: callers may reuse the buffer (e.g. pooled gRPC frames).
    this.insert(digest, Buffer.from(data));
  }

  private insert(digest: Digest, data: Buffer): void {
    const key = digestKey(digest);
    if (data.length > this.lru.limitBytes) {
      throw resourceExhausted(`blob ${digestString(digest)} (${data.length} bytes) exceeds the memory store's limit of ${this.lru.limitBytes} bytes`);
    }
    this.blobs.set(key, data);
    for (const k of this.lru.add(key, data.length)) this.blobs.delete(k);
  }

  beginWrite(digest: Digest): BlobWriter {
    return bufferingWriter((data) => this.insert(digest, data));
  }
}
