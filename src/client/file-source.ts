import type { Stats } from 'node:fs';
import { lstat, readdir, readFile, readlink, realpath } from 'node:fs/promises';
import path from 'node:path';
import { computeDigest, type Digest, type DigestFunction, digestKey, makeDigest } from '../common/digest.js';
import { Code, ReprError } from '../common/errors.js';
import { hashFile } from '../common/hash-file.js';
import { nodeToWire } from '../vfs/nodes.js';
import { rootOf } from '../vfs/paths.js';
import type { VEntry, VNode } from '../vfs/vfs.js';
import type { Node } from '../proto/repr/run/v1/run.js';
import type { ReapiClient } from '../reapi/reapi-client.js';

/** Blobs up to this size go in BatchUpdateBlobs; bigger ones by ByteStream. */
const BATCH_BLOB_BYTES = 1024 * 1024;
const BATCH_TOTAL_BYTES = 3 * 1024 * 1024;
/** Siblings hashed ahead of questions, per directory at most. */
const WARM_FILES_PER_DIR = 512;
/** Siblings uploaded ahead of questions: small files only, and a budget per directory. */
const WARM_UPLOAD_MAX_FILE = 64 * 1024;
const WARM_UPLOAD_BYTES_PER_DIR = 2 * 1024 * 1024;

interface Upload {
  digest: Digest;
  file: string;
  resolve(): void;
  reject(e: Error): void;
}

/**
 * Fails with PERMISSION_DENIED unless the directory holding `p`, symlinks
 * resolved, is inside a root. Missing directories are judged by their
 * nearest existing ancestor, where a `mkdir -p` would start.
 */
export async function assertRealParent(p: string, roots: readonly string[]): Promise<void> {
  for (let d = path.dirname(p); ; d = path.dirname(d)) {
    let real: string;
    try {
      real = await realpath(d);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if ((code === 'ENOENT' || code === 'ENOTDIR') && d !== '/') continue;
      throw new ReprError(Code.PERMISSION_DENIED, `cannot resolve ${d}: ${(e as Error).message}`);
    }
    if (!rootOf(real, roots)) throw new ReprError(Code.PERMISSION_DENIED, `${p} leads outside the run's roots through a symlink (to ${real})`);
    return;
  }
}

/** A file's hash with what identifies its version on disk (inode, size, times). */
export interface HashEntry {
  key: string;
  hash: string;
  size: number;
}

export interface FileSourceStats {
  /** Queries answered (lookups and listings). */
  answered: number;
  /** Files hashed (not served from the hash cache). */
  hashed: number;
  /** Blobs and bytes this client uploaded; each blob at most once per session. */
  uploadedBlobs: number;
  uploadedBytes: number;
  /** Blobs the CAS already had. */
  presentBlobs: number;
}

/**
 * The client's side of the virtualized file system: answers what a path is,
 * from the local disk, and makes sure a file's content is in the CAS before
 * its digest is handed out. Every file is hashed once per change (keyed by
 * inode, size and times) and uploaded at most once per session, however
 * many runs and workers ask for it: concurrent asks share one upload, and
 * FindMissingBlobs is batched across them.
 */
export class FileSource {
  readonly stats: FileSourceStats = { answered: 0, hashed: 0, uploadedBlobs: 0, uploadedBytes: 0, presentBlobs: 0 };
  private readonly hashes = new Map<string, { key: string; digest: Promise<Digest> }>();
  /** Blobs known to be in the CAS (or on their way there), by digest key. */
  private readonly inCas = new Map<string, Promise<void>>();
  private pending: Upload[] = [];
  private flushScheduled = false;
  private readonly warmed = new Set<string>();

  constructor(
    private readonly cas: ReapiClient,
    private readonly fn: DigestFunction,
  ) {}

  /**
   * What `p` is, for a run allowed to see `roots`. A path outside them is
   * refused: the server may read only what the client gave it.
   */
  async answer(p: string, list: boolean, roots: readonly string[]): Promise<Node> {
    if (!path.isAbsolute(p) || path.normalize(p) !== p || !rootOf(p, roots)) {
      throw new ReprError(Code.PERMISSION_DENIED, `${p} is outside the run's roots`);
    }
    // Lexically inside is not enough: through a symlinked directory under a
    // root, a path names a file elsewhere. The mount never asks for such a
    // path (it resolves symlinks itself), so one that does is refused.
    if (!roots.includes(p)) await assertRealParent(p, roots);
    this.stats.answered++;
    const node = await this.node(p, list);
    if (node.kind === 'file') this.warmSiblings(path.dirname(p));
    return nodeToWire(node, this.fn);
  }

  /**
   * After a question about one file of a directory, questions about its
   * siblings tend to follow (a compiler walking headers, grep walking a
   * tree). Hash them and ask the CAS about them in one call now, in the
   * background, and upload the small ones it lacks (up to a budget per
   * directory), so that those answers need neither a read nor a round trip.
   * Still at most one upload per blob: the same bookkeeping as on demand.
   */
  private warmSiblings(dir: string): void {
    if (this.warmed.has(dir)) return;
    this.warmed.add(dir);
    void (async () => {
      const names = (await readdir(dir)).slice(0, WARM_FILES_PER_DIR);
      const found: { file: string; digest: Digest }[] = [];
      await Promise.all(
        names.map(async (name) => {
          const file = path.join(dir, name);
          const st = await lstat(file);
          if (!st.isFile() || st.size > BATCH_BLOB_BYTES) return;
          found.push({ file, digest: await this.hashOf(file, st) });
        }),
      );
      const unknown = found.filter((f) => !this.inCas.has(digestKey(f.digest)));
      if (unknown.length === 0) return;
      const missing = new Set(
        (
          await this.cas.findMissing(
            unknown.map((f) => f.digest),
            this.fn,
          )
        ).map(digestKey),
      );
      const send: Upload[] = [];
      let budget = WARM_UPLOAD_BYTES_PER_DIR;
      for (const f of unknown) {
        const k = digestKey(f.digest);
        if (this.inCas.has(k)) continue;
        if (!missing.has(k)) {
          this.inCas.set(k, Promise.resolve());
          this.stats.presentBlobs++;
        } else if (f.digest.sizeBytes <= WARM_UPLOAD_MAX_FILE && f.digest.sizeBytes <= budget) {
          budget -= f.digest.sizeBytes;
          const p = new Promise<void>((resolve, reject) => send.push({ digest: f.digest, file: f.file, resolve, reject }));
          this.inCas.set(k, p);
          p.catch(() => this.inCas.delete(k));
        }
      }
      if (send.length > 0) await this.sendBatch(send);
    })().catch(() => undefined); // only a head start: the real question still gets answered
  }

  /** The node for a path, with the file's content put in the CAS. */
  async node(p: string, list: boolean): Promise<VNode> {
    let st: Stats;
    try {
      st = await lstat(p);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'ENOENT' || code === 'ENOTDIR') return { kind: 'absent' };
      throw new ReprError(Code.PERMISSION_DENIED, `cannot read ${p}: ${(e as Error).message}`);
    }
    const mtimeMs = Math.floor(st.mtimeMs);
    if (st.isFile()) {
      const digest = await this.ensure(p, st);
      return { kind: 'file', hash: digest.hash, size: digest.sizeBytes, mode: st.mode & 0o777, mtimeMs };
    }
    if (st.isSymbolicLink()) return { kind: 'symlink', target: await readlink(p), mtimeMs };
    if (st.isDirectory()) {
      const v: VNode = { kind: 'dir', mtimeMs };
      if (list) v.entries = await this.list(p);
      return v;
    }
    // Sockets, fifos and devices are not shipped.
    return { kind: 'absent' };
  }

  /** A directory's entries with sizes but no hashes: listing must not cost reading every file. */
  private async list(dir: string): Promise<VEntry[]> {
    const names = await readdir(dir);
    const out: VEntry[] = [];
    await Promise.all(
      names.map(async (name) => {
        try {
          const st = await lstat(path.join(dir, name));
          const mtimeMs = Math.floor(st.mtimeMs);
          if (st.isFile()) out.push({ name, node: { kind: 'file', size: st.size, mode: st.mode & 0o777, mtimeMs } });
          else if (st.isDirectory()) out.push({ name, node: { kind: 'dir', mtimeMs } });
          else if (st.isSymbolicLink()) out.push({ name, node: { kind: 'symlink', target: await readlink(path.join(dir, name)), mtimeMs } });
        } catch {
          /* vanished meanwhile */
        }
      }),
    );
    return out.sort((a, b) => (a.name < b.name ? -1 : 1));
  }

  /**
   * Hashes known from an earlier session (kept in the run record): a file
   * whose inode, size and times still match is not read again.
   */
  seedHashes(entries: Record<string, HashEntry>): void {
    for (const [file, e] of Object.entries(entries)) {
      if (!this.hashes.has(file)) this.hashes.set(file, { key: e.key, digest: Promise.resolve(makeDigest(this.fn, e.hash, e.size)) });
    }
  }

  /** The hashes this session knows for these files, to keep for the next session. */
  async knownHashes(files: readonly string[]): Promise<Record<string, HashEntry>> {
    const out: Record<string, HashEntry> = {};
    for (const f of files) {
      const h = this.hashes.get(f);
      if (!h) continue;
      try {
        const d = await h.digest;
        out[f] = { key: h.key, hash: d.hash, size: d.sizeBytes };
      } catch {
        /* failed to hash: nothing to keep */
      }
    }
    return out;
  }

  /** Hashes a file (unless unchanged since last time) and makes sure the CAS has it. */
  async ensure(file: string, st: Stats): Promise<Digest> {
    const digest = await this.hashOf(file, st);
    await this.upload(digest, file);
    return digest;
  }

  private hashOf(file: string, st: Stats): Promise<Digest> {
    const key = `${st.ino}:${st.size}:${st.mtimeMs}:${st.ctimeMs}`;
    let h = this.hashes.get(file);
    if (!h || h.key !== key) {
      this.stats.hashed++;
      // Small files in one read: most sources are, and a stream per file costs more than the hash.
      const digest = st.size <= BATCH_BLOB_BYTES ? readFile(file).then((data) => computeDigest(this.fn, data)) : hashFile(this.fn, file);
      h = { key, digest };
      this.hashes.set(file, h);
      h.digest.catch(() => this.hashes.delete(file));
    }
    return h.digest;
  }

  private upload(digest: Digest, file: string): Promise<void> {
    const k = digestKey(digest);
    let p = this.inCas.get(k);
    if (!p) {
      p = new Promise<void>((resolve, reject) => {
        this.pending.push({ digest, file, resolve, reject });
        if (!this.flushScheduled) {
          this.flushScheduled = true;
          // Everything asked for in this turn of the event loop shares one FindMissingBlobs.
          setImmediate(() => void this.flush());
        }
      });
      this.inCas.set(k, p);
      p.catch(() => this.inCas.delete(k));
    }
    return p;
  }

  private async flush(): Promise<void> {
    this.flushScheduled = false;
    const batch = this.pending;
    this.pending = [];
    try {
      const missing = new Set(
        (
          await this.cas.findMissing(
            batch.map((b) => b.digest),
            this.fn,
          )
        ).map(digestKey),
      );
      const present = batch.filter((b) => !missing.has(digestKey(b.digest)));
      this.stats.presentBlobs += present.length;
      for (const b of present) b.resolve();
      const toSend = batch.filter((b) => missing.has(digestKey(b.digest)));
      const small = toSend.filter((b) => b.digest.sizeBytes <= BATCH_BLOB_BYTES);
      const large = toSend.filter((b) => b.digest.sizeBytes > BATCH_BLOB_BYTES);
      const sends: Promise<void>[] = [];
      for (let i = 0; i < small.length; ) {
        const group: typeof small = [];
        let bytes = 0;
        while (i < small.length && (group.length === 0 || bytes + small[i]!.digest.sizeBytes <= BATCH_TOTAL_BYTES)) {
          bytes += small[i]!.digest.sizeBytes;
          group.push(small[i++]!);
        }
        sends.push(this.sendBatch(group));
      }
      for (const b of large) sends.push(this.sendOne(b));
      await Promise.all(sends);
    } catch (e) {
      for (const b of batch) b.reject(e as Error);
    }
  }

  private async sendBatch(group: Upload[]): Promise<void> {
    try {
      const blobs = await Promise.all(group.map(async (b) => ({ digest: b.digest, data: await readFile(b.file) })));
      const statuses = await this.cas.batchUpdate(blobs);
      for (const [i, b] of group.entries()) {
        const s = statuses[i];
        if (s && s.code === Code.OK) {
          this.stats.uploadedBlobs++;
          this.stats.uploadedBytes += b.digest.sizeBytes;
          b.resolve();
        } else {
          // A file changed between hashing and reading shows up here as a digest mismatch.
          b.reject(new ReprError(s?.code ?? Code.INTERNAL, `uploading ${b.file}: ${s?.message ?? 'no status'}`));
        }
      }
    } catch (e) {
      for (const b of group) b.reject(e as Error);
    }
  }

  private async sendOne(b: Upload): Promise<void> {
    try {
      await this.cas.write(b.digest, await readFile(b.file));
      this.stats.uploadedBlobs++;
      this.stats.uploadedBytes += b.digest.sizeBytes;
      b.resolve();
    } catch (e) {
      b.reject(e as Error);
    }
  }
}
