import type { Readable } from 'node:stream';
import type { Digest } from '../common/digest.js';

/**
 * A sink for one blob being written. Bytes are appended with `write`; nothing
 * is visible to readers until `commit` succeeds, and `abort` discards it all.
 * This is what makes a crash mid-upload harmless and lets ByteStream resume.
 */
export interface BlobWriter {
  /** Bytes accepted so far. */
  readonly written: number;
  write(chunk: Buffer): Promise<void>;
  /** Makes the blob visible atomically. Throws (and discards) if it is not what was declared. */
  commit(): Promise<void>;
  abort(): Promise<void>;
  /**
   * Lets go of what the writer holds between writes (a file descriptor)
   * while it waits, perhaps for minutes, for a client to resume; the next
   * write takes it back. Writers that hold nothing of the kind leave it out.
   */
  release?(): Promise<void>;
}

/**
 * The storage seam. Backends (disk, memory) implement it; decorators (read
 * caching, verification, metrics) wrap it and override only what they change.
 * Keys are digests; a store does not care whether they address content (CAS)
 * or name an action (action cache) — verification is a decorator for the CAS.
 *
 * Errors carry gRPC codes: NOT_FOUND for a missing blob, OUT_OF_RANGE for a
 * read offset past the end, INVALID_ARGUMENT for bytes that do not match.
 */
export interface BlobStore {
  /** The digests of `digests` that are not stored. Present blobs count as used (LRU). */
  findMissing(digests: readonly Digest[]): Promise<Digest[]>;
  /** A whole blob; for small blobs. */
  get(digest: Digest): Promise<Buffer>;
  /** A byte range of a blob as a stream; `limit` 0 or undefined means to the end. */
  read(digest: Digest, offset?: number, limit?: number): Promise<Readable>;
  put(digest: Digest, data: Buffer): Promise<void>;
  beginWrite(digest: Digest): BlobWriter;
  /**
   * A file on local disk that holds exactly this blob and will not be
   * modified, if the store has one: executors hard-link inputs from it
   * instead of copying. Undefined when the store keeps no such file.
   */
  localPath?(digest: Digest): string | undefined;
  /**
   * Fetches these blobs into local files (see localPath) with as few round
   * trips as the store can, before an executor links them one by one. Only
   * stores with a remote tier implement it; blobs it cannot fetch are left
   * for `get` to report.
   */
  localize?(digests: readonly Digest[]): Promise<void>;
  /**
   * Settles once the store knows everything it held at start (a disk store
   * indexes its files in the background, answering correctly meanwhile);
   * rejects if it never will (closed first, or the directory could not be
   * read). Stores with nothing to index leave it out: they are ready at once.
   */
  indexed?(): Promise<IndexedStats>;
  /** Releases resources (timers, file handles). */
  close?(): Promise<void>;
}

/** What a store's index holds once complete. */
export interface IndexedStats {
  blobs: number;
  bytes: number;
}

/**
 * When `store` is indexed, with what it holds; a stack of stores sums its
 * tiers (each tier's own blobs, a blob in two tiers twice).
 */
export function whenIndexed(store: BlobStore): Promise<IndexedStats> {
  return store.indexed?.() ?? Promise.resolve({ blobs: 0, bytes: 0 });
}

/** Collects a stream into one buffer. */
export async function readAll(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of stream) chunks.push(c as Buffer);
  return chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks);
}

/** `put` expressed with a writer; stores whose writes are streams use it. */
export async function putWithWriter(store: BlobStore, digest: Digest, data: Buffer): Promise<void> {
  const w = store.beginWrite(digest);
  try {
    await w.write(data);
  } catch (e) {
    await w.abort();
    throw e;
  }
  await w.commit();
}

/**
 * Decorator base: forwards every call to the wrapped store, so a decorator
 * overrides only the methods whose behaviour it changes.
 */
/**
 * A writer that gathers a blob in memory and hands it whole to `store` on
 * commit: for stores that keep a blob as one value (memory, a database row).
 * `check`, if given, sees the running size before each chunk is kept, so an
 * oversized blob is refused as it arrives rather than at commit.
 */
export function bufferingWriter(store: (data: Buffer) => void | Promise<void>, check?: (bytes: number) => void): BlobWriter {
  const chunks: Buffer[] = [];
  let written = 0;
  let done = false;
  return {
    get written() {
      return written;
    },
    async write(chunk: Buffer) {
      check?.(written + chunk.length);
      // A copy: the caller may reuse its buffer before commit.
      chunks.push(Buffer.from(chunk));
      written += chunk.length;
    },
    async commit() {
      if (done) return;
      done = true;
      await store(Buffer.concat(chunks, written));
      chunks.length = 0;
    },
    async abort() {
      done = true;
      chunks.length = 0;
    },
  };
}

export abstract class ForwardingBlobStore implements BlobStore {
  constructor(protected readonly inner: BlobStore) {}
  findMissing(digests: readonly Digest[]): Promise<Digest[]> {
    return this.inner.findMissing(digests);
  }
  get(digest: Digest): Promise<Buffer> {
    return this.inner.get(digest);
  }
  read(digest: Digest, offset?: number, limit?: number): Promise<Readable> {
    return this.inner.read(digest, offset, limit);
  }
  put(digest: Digest, data: Buffer): Promise<void> {
    return this.inner.put(digest, data);
  }
  beginWrite(digest: Digest): BlobWriter {
    return this.inner.beginWrite(digest);
  }
  localPath(digest: Digest): string | undefined {
    return this.inner.localPath?.(digest);
  }
  async localize(digests: readonly Digest[]): Promise<void> {
    await this.inner.localize?.(digests);
  }
  indexed(): Promise<IndexedStats> {
    return whenIndexed(this.inner);
  }
  async close(): Promise<void> {
    await this.inner.close?.();
  }
}
