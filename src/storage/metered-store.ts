import type { Readable } from 'node:stream';
import type { Digest } from '../common/digest.js';
import { type BlobWriter, ForwardingBlobStore, type BlobStore } from './blob-store.js';
import { resolveRange } from './range.js';

/**
 * What a store tree reports for metrics. Storage sits below the metrics
 * code, so it only calls this; the server decides what counts it.
 * `tier` names a backend by its place in the config tree ("disk" for a
 * lone one, "fast" / "slow" / "slow.fast" in read-caching stores), a
 * bounded set fixed by the config.
 */
export interface StoreMeter {
  /** Bytes of one blob (or the range of it) handed to a reader. */
  read(bytes: number): void;
  /** One blob of this size accepted by a put or a committed write. */
  written(bytes: number): void;
  /** A backend evicted a blob of this size to stay under its limit. */
  evicted(tier: string, bytes: number): void;
  /** A backend keeps blobs itself; `size` tells what it holds right now (read when scraped). */
  holds(tier: string, size: () => { bytes: number; blobs: number }): void;
}

/**
 * Counts what passes through the top of a store tree. Counting is done once
 * a call succeeded, from sizes already at hand (a read's range, a writer's
 * byte count), so the bytes themselves are never touched.
 */
export class MeteredBlobStore extends ForwardingBlobStore {
  constructor(
    inner: BlobStore,
    private readonly meter: StoreMeter,
  ) {
    super(inner);
  }

  override async get(digest: Digest): Promise<Buffer> {
    const data = await this.inner.get(digest);
    this.meter.read(data.length);
    return data;
  }

  override async read(digest: Digest, offset?: number, limit?: number): Promise<Readable> {
    const stream = await this.inner.read(digest, offset, limit);
    // The inner store accepted the range, so it resolves without throwing.
    const { start, end } = resolveRange(digest.sizeBytes, offset, limit);
    this.meter.read(end - start);
    return stream;
  }

  override async put(digest: Digest, data: Buffer): Promise<void> {
    await this.inner.put(digest, data);
    this.meter.written(data.length);
  }

  override beginWrite(digest: Digest): BlobWriter {
    const inner = this.inner.beginWrite(digest);
    const meter = this.meter;
    return {
      get written() {
        return inner.written;
      },
      write: (chunk) => inner.write(chunk),
      async commit() {
        await inner.commit();
        meter.written(inner.written);
      },
      abort: () => inner.abort(),
      ...(inner.release ? { release: () => inner.release!() } : {}),
    };
  }
}
