import type { BigIntStats } from 'node:fs';
import { lstat, readdir, readFile, readlink, realpath } from 'node:fs/promises';
import path from 'node:path';
import { computeDigest, type Digest, type DigestFunction, digestKey, makeDigest } from '../common/digest.js';
import { Code, ReprError } from '../common/errors.js';
import { hashFile } from '../common/hash-file.js';
import { HashCache } from './hash-cache.js';
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
/**
 * A listing asked for on demand carries the digests of its small regular
 * files, so the opens that usually follow (a glob, `make` scanning a
 * directory) need no question each: a first run over redis asked 1,325
 * questions, 4.3 s blocked on this client. Bounded so that listing a big
 * directory does not read and upload it all.
 */
const LISTING_DIGEST_MAX_FILE = 64 * 1024;
const LISTING_DIGEST_FILES = 2048;
const LISTING_DIGEST_BYTES = 4 * 1024 * 1024;

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
 * its digest is handed out. Every file is hashed once per change (see
 * HashCache for what proves it unchanged) and uploaded at most once per session, however
 * many runs and workers ask for it: concurrent asks share one upload, and
 * FindMissingBlobs is batched across them.
 */
export class FileSource {
  readonly stats: FileSourceStats = { answered: 0, hashed: 0, uploadedBlobs: 0, uploadedBytes: 0, presentBlobs: 0 };
  /** Hashes being taken, by path and stat: concurrent asks share one read. */
  private readonly hashing = new Map<string, Promise<Digest>>();
  /** Blobs known to be in the CAS (or on their way there), by digest key. */
  private readonly inCas = new Map<string, Promise<void>>();
  private pending: Upload[] = [];
  private flushScheduled = false;
  private readonly warmed = new Set<string>();

  constructor(
    private readonly cas: ReapiClient,
    private readonly fn: DigestFunction,
    readonly hashes: HashCache = HashCache.inMemory(),
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
    this.hashes.addRoots(roots);
    const node = await this.node(p, list, true);
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
          const st = await lstat(file, { bigint: true });
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

  /**
   * The node for a path, with the file's content put in the CAS; a listing
   * `withDigests` carries those of small files too (see LISTING_DIGEST_*).
   */
  async node(p: string, list: boolean, withDigests = false): Promise<VNode> {
    let st: BigIntStats;
    try {
      st = await lstat(p, { bigint: true });
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'ENOENT' || code === 'ENOTDIR') return { kind: 'absent' };
      throw new ReprError(Code.PERMISSION_DENIED, `cannot read ${p}: ${(e as Error).message}`);
    }
    const mtimeMs = Number(st.mtimeMs);
    if (st.isFile()) {
      const digest = await this.ensure(p, st);
      return { kind: 'file', hash: digest.hash, size: digest.sizeBytes, mode: Number(st.mode & 0o777n), mtimeMs };
    }
    if (st.isSymbolicLink()) return { kind: 'symlink', target: await readlink(p), mtimeMs };
    if (st.isDirectory()) {
      const v: VNode = { kind: 'dir', mtimeMs };
      if (list) v.entries = await this.list(p, withDigests);
      return v;
    }
    // Sockets, fifos and devices are not shipped.
    return { kind: 'absent' };
  }

  /**
   * A directory's entries with sizes; with digests only for the small
   * regular files within the LISTING_DIGEST_* bounds, each in the CAS
   * before it is named (one that fails to hash or upload goes without).
   * Fifos, sockets and devices are left out, as in answers.
   */
  private async list(dir: string, withDigests: boolean): Promise<VEntry[]> {
    const names = await readdir(dir);
    const out: VEntry[] = [];
    const small: { node: VNode; file: string; st: BigIntStats }[] = [];
    await Promise.all(
      names.map(async (name) => {
        const file = path.join(dir, name);
        try {
          const st = await lstat(file, { bigint: true });
          const mtimeMs = Number(st.mtimeMs);
          if (st.isFile()) {
            const node: VNode = { kind: 'file', size: Number(st.size), mode: Number(st.mode & 0o777n), mtimeMs };
            out.push({ name, node });
            if (withDigests && st.size <= LISTING_DIGEST_MAX_FILE) small.push({ node, file, st });
          } else if (st.isDirectory()) out.push({ name, node: { kind: 'dir', mtimeMs } });
          else if (st.isSymbolicLink()) out.push({ name, node: { kind: 'symlink', target: await readlink(file), mtimeMs } });
        } catch {
          /* vanished meanwhile */
        }
      }),
    );
    if (small.length > 0) {
      // Smallest first: the most files for the byte budget, and the same choice every time.
      small.sort((a, b) => Number(a.st.size - b.st.size) || (a.file < b.file ? -1 : 1));
      let bytes = 0;
      const chosen = small.slice(0, LISTING_DIGEST_FILES).filter((s) => (bytes += s.node.size!) <= LISTING_DIGEST_BYTES);
      // Siblings are covered here; warming them again after a lookup would only re-stat them.
      this.warmed.add(dir);
      await Promise.all(
        chosen.map(async (s) => {
          try {
            s.node.hash = (await this.ensure(s.file, s.st)).hash;
          } catch {
            /* the open will ask, and get the error then */
          }
        }),
      );
    }
    return out.sort((a, b) => (a.name < b.name ? -1 : 1));
  }

  /** Hashes a file (unless unchanged since last time) and makes sure the CAS has it. */
  async ensure(file: string, st: BigIntStats): Promise<Digest> {
    const digest = await this.hashOf(file, st);
    await this.upload(digest, file);
    return digest;
  }

  private hashOf(file: string, st: BigIntStats): Promise<Digest> {
    const key = `${file}\0${st.ino}:${st.size}:${st.mtimeNs}:${st.ctimeNs}`;
    let digest = this.hashing.get(key);
    if (!digest) {
      digest = this.lookupOrHash(file, st);
      this.hashing.set(key, digest);
      const done = () => this.hashing.delete(key);
      digest.then(done, done);
    }
    return digest;
  }

  private async lookupOrHash(file: string, st: BigIntStats): Promise<Digest> {
    const known = await this.hashes.lookup(file, st);
    if (known !== undefined) return makeDigest(this.fn, known, Number(st.size));
    this.stats.hashed++;
    const hashedAtMs = this.hashes.now();
    // Small files in one read: most sources are, and a stream per file costs more than the hash.
    const d = st.size <= BATCH_BLOB_BYTES ? computeDigest(this.fn, await readFile(file)) : await hashFile(this.fn, file);
    // A size that differs from the stat's means the file changed while read: not worth keeping.
    if (BigInt(d.sizeBytes) === st.size) await this.hashes.remember(file, st, d.hash, hashedAtMs);
    return d;
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
