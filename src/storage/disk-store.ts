import { createReadStream, mkdirSync, rmSync, unlinkSync } from 'node:fs';
import { open, readdir, rename, stat, unlink, type FileHandle } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { Readable } from 'node:stream';
import { type Digest, digestString, DIGEST_FUNCTIONS } from '../common/digest.js';
import { internal, notFound, resourceExhausted } from '../common/errors.js';
import type { BlobStore, BlobWriter } from './blob-store.js';
import { putWithWriter, readAll } from './blob-store.js';
import { LruIndex } from './lru-index.js';
import { resolveRange } from './range.js';

export interface DiskBlobStoreOptions {
  /** Directory that holds `blobs/` and `tmp/`; created if absent. */
  directory: string;
  /** Bytes the store may hold before evicting least-recently-used blobs. */
  limitBytes: number;
  /**
   * fsync each blob before it becomes visible. Without it a process crash
   * still never exposes a partial blob (writes land in tmp/ and are renamed),
   * but a power loss could.
   */
  fsync?: boolean;
  /** Size of the chunks `read` yields. */
  readChunkBytes?: number;
  /** Told the size of each blob evicted to stay under the limit. */
  onEvict?: (bytes: number) => void;
}

const FILE_NAME = /^([a-z0-9]+)-([0-9a-f]+)-(\d+)$/;

/**
 * Blobs as files named by digest under `blobs/<first two hex digits>/`.
 * Every write goes to a private file in `tmp/` and is renamed into place only
 * once complete, so readers never see a partial blob and a crash leaves only
 * garbage in tmp/, which `open` clears. The LRU index lives in memory and is
 * rebuilt at start-up from the files' access times.
 */
export class DiskBlobStore implements BlobStore {
  private readonly lru: LruIndex;
  private readonly blobDir: string;
  private readonly tmpDir: string;
  private readonly readChunk: number;

  private constructor(private readonly opts: DiskBlobStoreOptions) {
    this.lru = new LruIndex(opts.limitBytes, opts.onEvict);
    this.blobDir = path.join(opts.directory, 'blobs');
    this.tmpDir = path.join(opts.directory, 'tmp');
    this.readChunk = opts.readChunkBytes ?? 1024 * 1024;
  }

  static async open(opts: DiskBlobStoreOptions): Promise<DiskBlobStore> {
    const store = new DiskBlobStore(opts);
    await store.load();
    return store;
  }

  get totalBytes(): number {
    return this.lru.totalBytes;
  }

  get count(): number {
    return this.lru.count;
  }

  private async load(): Promise<void> {
    // Leftovers in tmp/ are writes a crash interrupted: never valid blobs.
    rmSync(this.tmpDir, { recursive: true, force: true });
    mkdirSync(this.tmpDir, { recursive: true });
    for (let i = 0; i < 256; i++) mkdirSync(path.join(this.blobDir, i.toString(16).padStart(2, '0')), { recursive: true });

    const found: { key: string; size: number; atime: number }[] = [];
    const known = new Set(DIGEST_FUNCTIONS.map((f) => f.name as string));
    for (const sub of await readdir(this.blobDir)) {
      const dir = path.join(this.blobDir, sub);
      const names = await readdir(dir);
      // Bounded parallelism: a million stats one at a time would take minutes.
      for (let i = 0; i < names.length; i += 256) {
        const batch = names.slice(i, i + 256);
        const stats = await Promise.all(batch.map((n) => stat(path.join(dir, n)).catch(() => undefined)));
        batch.forEach((name, j) => {
          const m = FILE_NAME.exec(name);
          const st = stats[j];
          if (!m || !st || !known.has(m[1]!)) return;
          found.push({ key: name, size: st.size, atime: st.atimeMs });
        });
      }
    }
    found.sort((a, b) => a.atime - b.atime);
    for (const f of found) {
      for (const k of this.lru.add(f.key, f.size)) this.removeFile(k);
    }
  }

  private fileName(d: Digest): string {
    return fileNameOf(d);
  }

  private filePath(name: string): string {
    return filePathIn(this.blobDir, name);
  }

  /**
   * Where a store opened on `directory` keeps this blob. For tools that
   * prepare a store's directory offline (the memory benchmark seeds a
   * million blobs this way); a running store must be written through `put`.
   */
  static blobFile(directory: string, d: Digest): string {
    return filePathIn(path.join(directory, 'blobs'), fileNameOf(d));
  }

  private removeFile(name: string): void {
    // Synchronous on purpose: an asynchronous unlink could land after a new
    // write of the same blob was renamed into place and delete it.
    try {
      unlinkSync(this.filePath(name));
    } catch {
      /* already gone */
    }
  }

  async findMissing(digests: readonly Digest[]): Promise<Digest[]> {
    return digests.filter((d) => !this.lru.touch(this.fileName(d)));
  }

  localPath(digest: Digest): string | undefined {
    const name = this.fileName(digest);
    return this.lru.touch(name) ? this.filePath(name) : undefined;
  }

  private async openBlob(d: Digest): Promise<{ fh: FileHandle; size: number; name: string }> {
    const name = this.fileName(d);
    if (!this.lru.has(name)) throw notFound(`blob ${digestString(d)} not found`);
    let fh: FileHandle;
    try {
      fh = await open(this.filePath(name), 'r');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') {
        // Removed behind our back (or evicted while we waited): forget it.
        this.lru.remove(name);
        throw notFound(`blob ${digestString(d)} not found`);
      }
      throw internal(`opening blob ${digestString(d)}: ${(e as Error).message}`, e);
    }
    this.lru.touch(name);
    const { size } = await fh.stat();
    return { fh, size, name };
  }

  async get(digest: Digest): Promise<Buffer> {
    return readAll(await this.read(digest));
  }

  async read(digest: Digest, offset?: number, limit?: number): Promise<Readable> {
    const { fh, size } = await this.openBlob(digest);
    let range: { start: number; end: number };
    try {
      range = resolveRange(size, offset, limit);
    } catch (e) {
      await fh.close();
      throw e;
    }
    if (range.end === range.start) {
      await fh.close();
      return Readable.from([]);
    }
    // Reading from an open handle keeps working even if the blob is evicted meanwhile.
    // createReadStream's `end` is inclusive.
    return createReadStream('', { fd: fh, start: range.start, end: range.end - 1, highWaterMark: this.readChunk, autoClose: true });
  }

  put(digest: Digest, data: Buffer): Promise<void> {
    return putWithWriter(this, digest, data);
  }

  beginWrite(digest: Digest): BlobWriter {
    return new DiskWriter(this, digest, this.fileName(digest), path.join(this.tmpDir, randomBytes(12).toString('hex')));
  }

  /** Called by a writer once its temporary file is complete. */
  async install(name: string, tmpPath: string, size: number): Promise<void> {
    if (size > this.lru.limitBytes) {
      await unlink(tmpPath).catch(() => undefined);
      throw resourceExhausted(`blob ${name} (${size} bytes) exceeds the disk store's limit of ${this.lru.limitBytes} bytes`);
    }
    if (this.lru.touch(name)) {
      // Someone else stored it first; identical content, so ours is redundant.
      await unlink(tmpPath).catch(() => undefined);
      return;
    }
    await rename(tmpPath, this.filePath(name));
    for (const k of this.lru.add(name, size)) this.removeFile(k);
  }

  get fsync(): boolean {
    return this.opts.fsync === true;
  }
}

function fileNameOf(d: Digest): string {
  return `${d.fn.name}-${d.hash}-${d.sizeBytes}`;
}

function filePathIn(blobDir: string, name: string): string {
  // The name starts with "<fn>-<hash>": the fan-out directory is the hash's first two digits.
  const hash = name.slice(name.indexOf('-') + 1);
  return path.join(blobDir, hash.slice(0, 2), name);
}

class DiskWriter implements BlobWriter {
  /** Open only while bytes flow: `release` closes it and the next write reopens the file. */
  private fh: Promise<FileHandle> | undefined;
  /** Whether the temporary file exists, so that a released writer still removes it on abort. */
  private created = false;
  private bytes = 0;
  private done = false;
  /** Writes are serialized so that a caller firing several never interleaves them. */
  private tail: Promise<void> = Promise.resolve();

  constructor(
    private readonly store: DiskBlobStore,
    private readonly digest: Digest,
    private readonly name: string,
    private readonly tmpPath: string,
  ) {}

  get written(): number {
    return this.bytes;
  }

  private handle(): Promise<FileHandle> {
    this.fh ??= open(this.tmpPath, this.created ? 'r+' : 'wx').then((fh) => {
      this.created = true;
      return fh;
    });
    return this.fh;
  }

  private async closeHandle(): Promise<void> {
    const fh = this.fh;
    this.fh = undefined;
    if (fh) await fh.then((h) => h.close()).catch(() => undefined);
  }

  private enqueue(step: () => Promise<void>): Promise<void> {
    const p = this.tail.then(step);
    this.tail = p.catch(() => undefined);
    return p;
  }

  write(chunk: Buffer): Promise<void> {
    if (this.done) return Promise.reject(internal(`write to finished upload of ${digestString(this.digest)}`));
    return this.enqueue(async () => {
      const fh = await this.handle();
      let off = 0;
      while (off < chunk.length) {
        // Positioned writes: a reopened handle starts at 0, not at the end of what was written.
        const { bytesWritten } = await fh.write(chunk, off, chunk.length - off, this.bytes + off);
        off += bytesWritten;
      }
      this.bytes += chunk.length;
    });
  }

  release(): Promise<void> {
    return this.enqueue(() => this.closeHandle());
  }

  async commit(): Promise<void> {
    if (this.done) return;
    await this.tail;
    this.done = true;
    const fh = await this.handle();
    this.fh = undefined;
    try {
      if (this.store.fsync) await fh.datasync();
    } finally {
      await fh.close();
    }
    await this.store.install(this.name, this.tmpPath, this.bytes);
  }

  async abort(): Promise<void> {
    if (this.done) return;
    this.done = true;
    await this.tail;
    await this.closeHandle();
    if (this.created) await unlink(this.tmpPath).catch(() => undefined);
  }
}
