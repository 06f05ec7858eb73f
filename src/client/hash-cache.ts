import { createHash } from 'node:crypto';
import type { BigIntStats } from 'node:fs';
import { mkdir, readdir, readFile, rename, stat, unlink, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { type Clock, systemClock } from '../common/clock.js';
import type { DigestFunction } from '../common/digest.js';

/**
 * A file whose mtime is this close to (or after) the moment its hash was
 * taken may have been written again within the same timestamp tick, after
 * the read: its stat would not change, so the hash is not trusted. Git calls
 * these "racily clean" entries and re-reads them; here they are re-hashed
 * next time. The margin covers coarse timestamps (ext4 stamps with the
 * kernel tick, a few ms; ext3 and HFS+ in seconds; FAT in 2 s) and a little
 * skew between this machine's clock and a network file system's.
 */
export const RACY_MARGIN_MS = 2000;
/** Bytes of hashes kept on disk (~180 B a file); the trees used longest ago go first. */
export const MAX_CACHE_BYTES = 32 * 1024 * 1024;

/**
 * One file's hash and the stat it was taken with, as decimal strings
 * (compared as they are: parsing 2,000 entries' bigints costs more than
 * the lookups). The birth time, with the inode number, names one file: a
 * number is handed out again once its file is gone.
 */
type Entry = [hash: string, size: number, mtimeNs: string, ino: string, btimeNs: string, ctimeNs: string, hashedAtMs: number];

/** The hashes of the files under one root, in one file on disk. */
interface Tree {
  root: string;
  files: Record<string, Entry>;
  /** Paths (relative) whose entries this process made or changed: what it writes back. */
  changed: Set<string>;
}

interface StoredTree {
  version: 1;
  root: string;
  files: Record<string, Entry>;
}

/**
 * The client's memory of file hashes, kept across runs and trees, so an
 * unchanged file is not read again. When a hash may be reused:
 *
 * - Same path, same file (inode number and birth time): only if size, mtime
 *   and ctime (to the ns) all match. ctime cannot be set from user space,
 *   so an edit in place is seen even when the editor restores mtime (git and
 *   Bazel key on it too). The birth time tells a new file apart from an old
 *   one: `rm -rf` then `cp -a` at the same place gets the freed inode
 *   numbers back on ext4.
 * - Otherwise (a fresh copy of the tree elsewhere or at the same place, or a
 *   file replaced by rename): only if the path relative to its root, the
 *   size and the mtime to the ns match an entry of any tree. `cp -a`,
 *   `rsync -a` and `tar` keep mtime; a copy gets new inodes and ctimes,
 *   which is why the usual size + mtime + inode key re-hashes a whole copied
 *   tree (redis: 1.9 s for 2,244 files). This is rsync's quick check, with
 *   one guard: an mtime with no sub-second part was set, not stamped by the
 *   kernel at a write (archives and reproducible builds pin times to whole
 *   seconds, e.g. npm's 1985-10-26), so two versions of a file can share it
 *   and such files must match by inode. The trade-off: a file replaced by
 *   another of the same size whose ns mtime was copied onto it on purpose
 *   (`touch -r`) is taken as unchanged, as by rsync.
 * - Never when the entry was racy (see RACY_MARGIN_MS).
 *
 * A `git checkout` stamps files with the time it writes them, so a fresh
 * clone is hashed once: nothing cheaper than reading proves its content.
 *
 * On disk, one file per root: a run in an unchanged tree reads only its own
 * (and writes nothing); the others are read the first time a file is not
 * known at its own path, as in a fresh copy.
 */
export class HashCache {
  private readonly trees = new Map<string, Promise<Tree>>();
  private everyTree?: Promise<Tree[]>;
  private readonly roots = new Set<string>();

  private constructor(
    /** Where the trees' files are; none for a cache that lives only as long as the process. */
    private readonly dir: string | undefined,
    private readonly clock: Clock,
    private readonly maxBytes = MAX_CACHE_BYTES,
  ) {}

  static inMemory(clock: Clock = systemClock): HashCache {
    return new HashCache(undefined, clock);
  }

  /** The cache kept under `dir` for this digest function (read as needed; a torn file counts as empty). */
  static onDisk(dir: string, fn: DigestFunction, clock: Clock = systemClock, maxBytes = MAX_CACHE_BYTES): HashCache {
    return new HashCache(path.join(dir, `hashes-${fn.name}`), clock, maxBytes);
  }

  /** Roots of the runs this cache serves: files are matched across copies by their path in a root. */
  addRoots(roots: readonly string[]): void {
    for (const r of roots) this.roots.add(r);
  }

  /** The hash of `p` if what its stat says proves the content unchanged since it was hashed. */
  async lookup(p: string, st: BigIntStats): Promise<string | undefined> {
    const root = this.rootOf(p);
    const rel = relative(root, p);
    const own = await this.tree(root);
    const e = own.files[rel];
    const ino = String(st.ino);
    const btime = String(st.birthtimeNs);
    const mtime = String(st.mtimeNs);
    const size = Number(st.size);
    // Where the file system keeps no birth time both are 0: the inode number alone decides, erring towards re-hashing.
    if (e && e[3] === ino && e[4] === btime) {
      return e[1] === size && e[2] === mtime && e[5] === String(st.ctimeNs) && !racy(e) ? e[0] : undefined;
    }
    if (st.mtimeNs % 1_000_000_000n === 0n) return undefined;
    for (const t of await this.allTrees()) {
      const c = t.files[rel];
      if (c && c[1] === size && c[2] === mtime && !racy(c)) {
        this.set(own, rel, [c[0], size, mtime, ino, btime, String(st.ctimeNs), c[6]]);
        return c[0];
      }
    }
    return undefined;
  }

  /** Records a hash taken of `p` as `st` described it, the stat taken at `hashedAtMs` before the read. */
  async remember(p: string, st: BigIntStats, hash: string, hashedAtMs: number): Promise<void> {
    const root = this.rootOf(p);
    const entry: Entry = [hash, Number(st.size), String(st.mtimeNs), String(st.ino), String(st.birthtimeNs), String(st.ctimeNs), hashedAtMs];
    this.set(await this.tree(root), relative(root, p), entry);
  }

  /** The current time, for `remember`'s `hashedAtMs`. */
  now(): number {
    return this.clock.now();
  }

  /**
   * Writes the trees this process changed, merged into what other processes
   * wrote meanwhile (theirs kept for paths this one did not change; losing
   * an entry to a race costs only a re-hash), then drops the trees used
   * longest ago beyond the byte budget.
   */
  async save(): Promise<void> {
    if (!this.dir) return;
    const written = new Set<string>();
    for (const pending of this.trees.values()) {
      const t = await pending;
      if (t.changed.size === 0) continue;
      const file = this.fileOf(t.root);
      const onDisk = await readTree(file, t.root);
      for (const rel of t.changed) onDisk.files[rel] = t.files[rel]!;
      await mkdir(this.dir, { recursive: true });
      const tmp = `${file}.${process.pid}.tmp`;
      await writeFile(tmp, JSON.stringify({ version: 1, root: t.root, files: onDisk.files } satisfies StoredTree));
      await rename(tmp, file);
      t.changed.clear();
      written.add(file);
    }
    if (written.size > 0) await this.evict(written);
  }

  private async evict(keep: Set<string>): Promise<void> {
    const files = await Promise.all(
      (await readdir(this.dir!))
        .filter((n) => n.endsWith('.json'))
        .map(async (n) => {
          const file = path.join(this.dir!, n);
          const s = await stat(file).catch(() => undefined);
          return { file, bytes: s?.size ?? 0, usedMs: s?.mtimeMs ?? 0 };
        }),
    );
    let total = 0;
    for (const f of files.sort((a, b) => b.usedMs - a.usedMs)) {
      total += f.bytes;
      if (total > this.maxBytes && !keep.has(f.file)) await unlink(f.file).catch(() => undefined);
    }
  }

  private set(t: Tree, rel: string, e: Entry): void {
    t.files[rel] = e;
    t.changed.add(rel);
  }

  private tree(root: string): Promise<Tree> {
    let t = this.trees.get(root);
    if (!t) {
      t = this.dir ? readTree(this.fileOf(root), root) : Promise.resolve({ root, files: {}, changed: new Set<string>() });
      this.trees.set(root, t);
    }
    return t;
  }

  /** Every tree on disk (and in memory), read once per process, the first time a copy is looked for. */
  private allTrees(): Promise<Tree[]> {
    this.everyTree ??= (async () => {
      if (this.dir) {
        const names = await readdir(this.dir).catch(() => [] as string[]);
        await Promise.all(
          names
            .filter((n) => n.endsWith('.json'))
            .map(async (n) => {
              const t = await readTree(path.join(this.dir!, n), undefined);
              if (t.root && !this.trees.has(t.root)) this.trees.set(t.root, Promise.resolve(t));
            }),
        );
      }
      return Promise.all(this.trees.values());
    })();
    // Trees first seen after that (another root of a later run) join the search too.
    return this.everyTree.then(async (known) => (known.length === this.trees.size ? known : Promise.all(this.trees.values())));
  }

  private fileOf(root: string): string {
    return path.join(this.dir!, `${createHash('sha256').update(root).digest('hex').slice(0, 32)}.json`);
  }

  /**
   * The innermost root holding `p`; `/` for a path under none (a caller
   * that never named its roots), which then is known at its own path only.
   */
  private rootOf(p: string): string {
    let best = '/';
    for (const r of this.roots) {
      if (p.startsWith(r.endsWith('/') ? r : `${r}/`) && r.length > best.length) best = r;
    }
    return best;
  }
}

const relative = (root: string, p: string) => p.slice(root.endsWith('/') ? root.length : root.length + 1);

function racy(e: Entry): boolean {
  return BigInt(e[2]) >= BigInt(e[6] - RACY_MARGIN_MS) * 1_000_000n;
}

const isEntry = (e: unknown): e is Entry =>
  Array.isArray(e) &&
  e.length === 7 &&
  typeof e[0] === 'string' &&
  Number.isSafeInteger(e[1]) &&
  [2, 3, 4, 5].every((i) => typeof e[i] === 'string' && /^\d+$/.test(e[i])) &&
  Number.isFinite(e[6]);

/** A tree's file; absent, torn or another root's (a hash collision of names) reads as empty. */
async function readTree(file: string, root: string | undefined): Promise<Tree> {
  try {
    const s = JSON.parse(await readFile(file, 'utf8')) as StoredTree;
    if (s.version === 1 && typeof s.root === 'string' && (root === undefined || s.root === root) && s.files && typeof s.files === 'object') {
      const files: Record<string, Entry> = {};
      for (const [rel, e] of Object.entries(s.files)) if (isEntry(e)) files[rel] = e;
      return { root: s.root, files, changed: new Set() };
    }
  } catch {
    /* absent or torn: start over */
  }
  return { root: root ?? '', files: {}, changed: new Set() };
}
