import { createReadStream, mkdirSync, rmSync, statSync, unlinkSync } from 'node:fs';
import { open, readdir, rename, stat, unlink, type FileHandle } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { Readable } from 'node:stream';
import { setImmediate as nextTurn } from 'node:timers/promises';
import { type Digest, digestString, DIGEST_FUNCTIONS } from '../common/digest.js';
import { cancelled, internal, notFound, resourceExhausted } from '../common/errors.js';
import type { BlobStore, BlobWriter, IndexedStats } from './blob-store.js';
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
  /**
   * Awaited between slices of the background index so that calls are
   * answered while it runs; by default one turn of the event loop. Tests
   * hold it to look at a store in the middle of its index.
   */
  betweenSlices?: () => Promise<void>;
  /** Told the size of each blob evicted to stay under the limit. */
  onEvict?: (bytes: number) => void;
}

const FILE_NAME = /^([a-z0-9]+)-([0-9a-f]+)-(\d+)$/;
const KNOWN_FUNCTIONS = new Set(DIGEST_FUNCTIONS.map((f) => f.name as string));

/**
 * Files stat'ed at once. Enough to keep libuv's thread pool busy; more only
 * queues behind it and delays the reads of calls being served meanwhile.
 */
const STAT_BATCH = 256;
/** Index entries recorded per turn of the event loop (about a millisecond's work). */
const INSERT_SLICE = 4096;
/** Blobs deleted per turn when the store restarts over its limit (synchronous unlinks). */
const EVICT_SLICE = 512;

/**
 * - SCANNING: files on disk may be missing from the index, so a lookup the
 *   index cannot answer looks on disk, and nothing is evicted.
 * - TRIMMING: the index is complete; blobs beyond the limit are being deleted.
 * - INDEXED: the index alone answers, and every write evicts what it must.
 */
type IndexState = 'SCANNING' | 'TRIMMING' | 'INDEXED';

interface FoundBlob {
  name: string;
  size: number;
  atime: number;
}

/**
 * Blobs as files named by digest under `blobs/<first two hex digits>/`.
 * Every write goes to a private file in `tmp/` and is renamed into place only
 * once complete, so readers never see a partial blob and a crash leaves only
 * garbage in tmp/, which `open` clears.
 *
 * The LRU index lives in memory. `open` returns at once and the index is
 * built in the background (stat'ing a million files takes seconds); until it
 * is complete a blob the index lacks is looked for on disk, so nothing stored
 * is reported missing, and whatever is found or written meanwhile is recorded
 * once, as recently used. Eviction waits for the index: before it is complete
 * the store's size is unknown, and the only blobs it could pick would be the
 * ones just used or written, the opposite of least recently used. So a
 * restart may hold more than the limit for the seconds the index takes, and
 * a store that restarts over its limit (a lowered limit) deletes the excess
 * once indexed. Files are indexed oldest access time first, as LRU order.
 */
export class DiskBlobStore implements BlobStore {
  private readonly lru: LruIndex;
  private readonly blobDir: string;
  private readonly tmpDir: string;
  private readonly readChunk: number;
  private readonly betweenSlices: () => Promise<void>;
  private state: IndexState = 'SCANNING';
  private closed = false;
  private indexing!: Promise<IndexedStats>;

  private constructor(private readonly opts: DiskBlobStoreOptions) {
    this.lru = new LruIndex(opts.limitBytes, opts.onEvict);
    this.blobDir = path.join(opts.directory, 'blobs');
    this.tmpDir = path.join(opts.directory, 'tmp');
    this.readChunk = opts.readChunkBytes ?? 1024 * 1024;
    this.betweenSlices = opts.betweenSlices ?? (() => nextTurn());
  }

  /** Ready for calls at once; `indexed` says when the index is complete. */
  static async open(opts: DiskBlobStoreOptions): Promise<DiskBlobStore> {
    const store = new DiskBlobStore(opts);
    store.prepare();
    store.indexing = store.index();
    // Observed here so that a failure nobody asked about is not an unhandled rejection.
    store.indexing.catch(() => undefined);
    return store;
  }

  get totalBytes(): number {
    return this.lru.totalBytes;
  }

  get count(): number {
    return this.lru.count;
  }

  indexed(): Promise<IndexedStats> {
    return this.indexing;
  }

  async close(): Promise<void> {
    this.closed = true;
    // The index stops at its next slice; nothing touches the directory after close.
    await this.indexing.catch(() => undefined);
  }

  /** Synchronous, so that a directory that cannot be written fails the open. */
  private prepare(): void {
    // Leftovers in tmp/ are writes a crash interrupted: never valid blobs.
    rmSync(this.tmpDir, { recursive: true, force: true });
    mkdirSync(this.tmpDir, { recursive: true });
    for (let i = 0; i < 256; i++) mkdirSync(path.join(this.blobDir, i.toString(16).padStart(2, '0')), { recursive: true });
  }

  private async nextSlice(): Promise<void> {
    await this.betweenSlices();
    if (this.closed) throw cancelled(`disk store ${this.opts.directory} closed before its index was complete`);
  }

  private async index(): Promise<IndexedStats> {
    // Each fan-out directory is sorted on its own (a few thousand entries),
    // then all are merged: one sort of a million would hold the event loop
    // for a good part of a second.
    const runs: FoundBlob[][] = [];
    for (const sub of (await readdir(this.blobDir)).sort()) {
      const dir = path.join(this.blobDir, sub);
      const names = (await readdir(dir).catch(() => [] as string[])).filter(isBlobFileName);
      const run: FoundBlob[] = [];
      for (let i = 0; i < names.length; i += STAT_BATCH) {
        await this.nextSlice();
        const batch = names.slice(i, i + STAT_BATCH);
        const stats = await statAll(batch.map((n) => path.join(dir, n)));
        batch.forEach((name, j) => {
          const st = stats[j];
          if (st) run.push({ name, size: st.size, atime: st.atimeMs });
        });
      }
      runs.push(run.sort((a, b) => a.atime - b.atime));
    }
    let n = 0;
    for (const f of mergeByAtime(runs)) {
      // A blob found or written while the scan ran is already there, as recently used.
      this.lru.insert(f.name, f.size, false);
      if (++n % INSERT_SLICE === 0) await this.nextSlice();
    }
    this.state = 'TRIMMING';
    for (;;) {
      const evicted = this.lru.evict(EVICT_SLICE);
      for (const k of evicted) this.removeFile(k);
      if (evicted.length < EVICT_SLICE) break;
      await this.nextSlice();
    }
    this.state = 'INDEXED';
    return { blobs: this.lru.count, bytes: this.lru.totalBytes };
  }

  /**
   * Records a blob found on disk outside the scan. False when the index is
   * complete without it: it was deleted (trimmed) since it was found.
   */
  private found(name: string, size: number): boolean {
    if (this.lru.touch(name)) return true;
    if (this.state !== 'SCANNING') return false;
    this.lru.insert(name, size, true);
    return true;
  }

  /** Whether each of `names`, absent from the index while it is being built, is on disk. */
  private async findOnDisk(names: readonly string[]): Promise<boolean[]> {
    const present: boolean[] = [];
    for (let i = 0; i < names.length; i += STAT_BATCH) {
      const batch = names.slice(i, i + STAT_BATCH);
      const stats = await statAll(batch.map((n) => this.filePath(n)));
      batch.forEach((name, j) => {
        const st = stats[j];
        present.push(st !== undefined && this.found(name, st.size));
      });
    }
    return present;
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
    const missing = digests.filter((d) => !this.lru.touch(this.fileName(d)));
    if (missing.length === 0 || this.state !== 'SCANNING') return missing;
    const onDisk = await this.findOnDisk(missing.map((d) => this.fileName(d)));
    return missing.filter((_, i) => !onDisk[i]);
  }

  localPath(digest: Digest): string | undefined {
    const name = this.fileName(digest);
    const file = this.filePath(name);
    if (this.lru.touch(name)) return file;
    if (this.state !== 'SCANNING') return undefined;
    // The seam is synchronous; a stat of a cached entry costs microseconds,
    // and only until the index is complete.
    const st = statSync(file, { throwIfNoEntry: false });
    return st?.isFile() && this.found(name, st.size) ? file : undefined;
  }

  private async openBlob(d: Digest): Promise<{ fh: FileHandle; size: number; name: string }> {
    const name = this.fileName(d);
    const indexed = this.lru.has(name);
    if (!indexed && this.state !== 'SCANNING') throw notFound(`blob ${digestString(d)} not found`);
    let fh: FileHandle;
    try {
      fh = await open(this.filePath(name), 'r');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') {
        // Removed behind our back (or evicted while we waited): forget it.
        if (indexed) this.lru.remove(name);
        throw notFound(`blob ${digestString(d)} not found`);
      }
      throw internal(`opening blob ${digestString(d)}: ${(e as Error).message}`, e);
    }
    const { size } = await fh.stat();
    if (indexed) this.lru.touch(name);
    else if (!this.found(name, size)) {
      await fh.close();
      throw notFound(`blob ${digestString(d)} not found`);
    }
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
    // While indexing, the blob may be on disk unindexed: the rename replaces it with the same bytes.
    await rename(tmpPath, this.filePath(name));
    if (this.state === 'INDEXED') {
      for (const k of this.lru.add(name, size)) this.removeFile(k);
    } else {
      // Counted once: the scan skips what the index already holds. The trim evicts for it.
      this.lru.insert(name, size, true);
    }
  }

  get fsync(): boolean {
    return this.opts.fsync === true;
  }
}

function isBlobFileName(name: string): boolean {
  const m = FILE_NAME.exec(name);
  return m !== null && KNOWN_FUNCTIONS.has(m[1]!);
}

/** Stats of these files, undefined for those that are gone or are not regular files. */
async function statAll(files: readonly string[]) {
  const stats = await Promise.all(files.map((f) => stat(f).catch(() => undefined)));
  return stats.map((st) => (st?.isFile() ? st : undefined));
}

/** The blobs of runs each sorted by access time, merged oldest first. */
function* mergeByAtime(runs: readonly FoundBlob[][]): Generator<FoundBlob> {
  // A binary min-heap of the runs' cursors, keyed by the blob each points at.
  const heap = runs.filter((r) => r.length > 0).map((run) => ({ run, i: 0 }));
  const key = (h: number) => heap[h]!.run[heap[h]!.i]!.atime;
  const sink = (start: number) => {
    let h = start;
    for (;;) {
      const l = 2 * h + 1;
      const r = l + 1;
      let least = h;
      if (l < heap.length && key(l) < key(least)) least = l;
      if (r < heap.length && key(r) < key(least)) least = r;
      if (least === h) return;
      [heap[h], heap[least]] = [heap[least]!, heap[h]!];
      h = least;
    }
  };
  for (let h = (heap.length >> 1) - 1; h >= 0; h--) sink(h);
  while (heap.length > 0) {
    const top = heap[0]!;
    yield top.run[top.i]!;
    top.i++;
    if (top.i === top.run.length) {
      heap[0] = heap[heap.length - 1]!;
      heap.pop();
    }
    sink(0);
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
