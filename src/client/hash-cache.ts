import type { BigIntStats } from 'node:fs';
import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
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
/** Entries kept on disk, whole trees dropped least recently used first: ~150 B each. */
export const MAX_CACHED_FILES = 100_000;

/** What a hash was taken of: the stat fields that change when content does. */
interface Entry {
  hash: string;
  size: number;
  mtimeNs: bigint;
  ino: bigint;
  /** Birth time: with the inode number, names one file; a number is reused once its file is gone. */
  btimeNs: bigint;
  ctimeNs: bigint;
  /** When the stat before the read was taken (this machine's clock). */
  hashedAtMs: number;
}

/** On disk: one object per root, entries by path relative to it, bigints as decimal strings. */
type StoredEntry = [hash: string, size: number, mtimeNs: string, ino: string, btimeNs: string, ctimeNs: string, hashedAtMs: number];
interface StoredTree {
  usedMs: number;
  files: Record<string, StoredEntry>;
}
interface Stored {
  version: 1;
  trees: Record<string, StoredTree>;
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
 *   size and the mtime to the ns match an entry. `cp -a`, `rsync -a` and
 *   `tar` keep mtime; a copy gets new inodes and ctimes, which is why the
 *   usual size + mtime + inode key re-hashes a whole copied tree (redis:
 *   1.9 s for 2,244 files). This is rsync's quick check, with one
 *   guard: an mtime with no sub-second part was set, not stamped by the
 *   kernel at a write (archives and reproducible builds pin times to whole
 *   seconds, e.g. npm's 1985-10-26), so two versions of a file can share it
 *   and such files must match by inode. The trade-off: a file replaced by
 *   another of the same size whose ns mtime was copied onto it on purpose
 *   (`touch -r`) is taken as unchanged, as by rsync.
 * - Never when the entry was racy (see RACY_MARGIN_MS).
 *
 * A `git checkout` stamps files with the time it writes them, so a fresh
 * clone is hashed once: nothing cheaper than reading proves its content.
 */
export class HashCache {
  private readonly byPath = new Map<string, Entry>();
  /** By root-relative path, size and mtime: how a copy of a tree finds the original's hashes. */
  private readonly byCopy = new Map<string, Entry>();
  private readonly roots = new Set<string>();
  /** Paths whose entries this process made or confirmed: what it saves. */
  private readonly touched = new Set<string>();

  private constructor(
    private readonly file: string | undefined,
    private readonly clock: Clock,
  ) {}

  /** A cache that lives only as long as this process. */
  static inMemory(clock: Clock = systemClock): HashCache {
    return new HashCache(undefined, clock);
  }

  /** The cache kept in `dir` for this digest function; a missing or unreadable one starts empty. */
  static async load(dir: string, fn: DigestFunction, clock: Clock = systemClock): Promise<HashCache> {
    const c = new HashCache(path.join(dir, `hashes-${fn.name}.json`), clock);
    const stored = await readStored(c.file!);
    for (const [root, tree] of Object.entries(stored.trees)) {
      for (const [rel, e] of Object.entries(tree.files)) {
        const entry = fromStored(e);
        if (entry) c.put(path.join(root, rel), root, entry, false);
      }
    }
    return c;
  }

  /** Roots of the runs this cache serves: paths are matched across copies relative to them. */
  addRoots(roots: readonly string[]): void {
    for (const r of roots) this.roots.add(r);
  }

  /** The hash of `p` if what its stat says proves the content unchanged since it was hashed. */
  lookup(p: string, st: BigIntStats): string | undefined {
    const e = this.byPath.get(p);
    let found: Entry | undefined;
    // Where the file system keeps no birth time both are 0: the inode number alone decides, erring towards re-hashing.
    if (e && e.ino === st.ino && e.btimeNs === st.birthtimeNs) {
      if (e.ctimeNs === st.ctimeNs && e.mtimeNs === st.mtimeNs && BigInt(e.size) === st.size) found = e;
    } else if (st.mtimeNs % 1_000_000_000n !== 0n) {
      const root = this.rootOf(p);
      if (root) found = this.byCopy.get(copyKey(path.relative(root, p), st.size, st.mtimeNs));
    }
    if (!found || this.racy(found)) return undefined;
    const root = this.rootOf(p);
    if (root) this.put(p, root, { ...found, ino: st.ino, btimeNs: st.birthtimeNs, ctimeNs: st.ctimeNs }, true);
    return found.hash;
  }

  /** Records a hash taken of `p` as `st` described it, the stat taken at `hashedAtMs` before the read. */
  remember(p: string, st: BigIntStats, hash: string, hashedAtMs: number): void {
    const root = this.rootOf(p);
    if (!root) return;
    this.put(p, root, { hash, size: Number(st.size), mtimeNs: st.mtimeNs, ino: st.ino, btimeNs: st.birthtimeNs, ctimeNs: st.ctimeNs, hashedAtMs }, true);
  }

  /** The current time, for `remember`'s `hashedAtMs`. */
  now(): number {
    return this.clock.now();
  }

  /**
   * Writes what this process learned, merged into what other processes
   * wrote meanwhile (theirs kept for paths this one did not touch). Last
   * writer wins for the rest: losing an entry costs only a re-hash.
   */
  async save(): Promise<void> {
    if (!this.file || this.touched.size === 0) return;
    const stored = await readStored(this.file);
    const now = this.clock.now();
    for (const p of this.touched) {
      const root = this.rootOf(p)!;
      const e = this.byPath.get(p)!;
      const tree = (stored.trees[root] ??= { usedMs: now, files: {} });
      tree.usedMs = now;
      tree.files[path.relative(root, p)] = toStored(e);
    }
    let total = 0;
    for (const [root, tree] of Object.entries(stored.trees).sort((a, b) => b[1].usedMs - a[1].usedMs)) {
      total += Object.keys(tree.files).length;
      if (total > MAX_CACHED_FILES && tree.usedMs < now) delete stored.trees[root];
    }
    await mkdir(path.dirname(this.file), { recursive: true });
    const tmp = `${this.file}.${process.pid}.tmp`;
    await writeFile(tmp, JSON.stringify(stored));
    await rename(tmp, this.file);
  }

  private racy(e: Entry): boolean {
    return e.mtimeNs >= BigInt(e.hashedAtMs - RACY_MARGIN_MS) * 1_000_000n;
  }

  private put(p: string, root: string, e: Entry, touched: boolean): void {
    this.byPath.set(p, e);
    if (e.mtimeNs % 1_000_000_000n !== 0n) this.byCopy.set(copyKey(path.relative(root, p), BigInt(e.size), e.mtimeNs), e);
    if (touched) this.touched.add(p);
  }

  /** The innermost root holding `p`. */
  private rootOf(p: string): string | undefined {
    let best: string | undefined;
    for (const r of this.roots) {
      if ((p === r || p.startsWith(r.endsWith('/') ? r : `${r}/`)) && (!best || r.length > best.length)) best = r;
    }
    return best;
  }
}

const copyKey = (rel: string, size: bigint, mtimeNs: bigint) => `${size}:${mtimeNs}:${rel}`;

/** An entry as stored, or undefined if it is not one (an edited or foreign file). */
function fromStored(s: StoredEntry): Entry | undefined {
  try {
    const e = { hash: s[0], size: s[1], mtimeNs: BigInt(s[2]), ino: BigInt(s[3]), btimeNs: BigInt(s[4]), ctimeNs: BigInt(s[5]), hashedAtMs: s[6] };
    return typeof e.hash === 'string' && Number.isSafeInteger(e.size) && Number.isFinite(e.hashedAtMs) ? e : undefined;
  } catch {
    return undefined;
  }
}

const toStored = (e: Entry): StoredEntry => [e.hash, e.size, String(e.mtimeNs), String(e.ino), String(e.btimeNs), String(e.ctimeNs), e.hashedAtMs];

async function readStored(file: string): Promise<Stored> {
  try {
    const s = JSON.parse(await readFile(file, 'utf8')) as Stored;
    if (s.version === 1 && s.trees && typeof s.trees === 'object') return s;
  } catch {
    /* absent or torn: start over */
  }
  return { version: 1, trees: {} };
}
