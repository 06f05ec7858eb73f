import { copyFile, open, truncate as truncateFile } from 'node:fs/promises';
import path from 'node:path';
import { fileMode, type NodeKind, type VAccessReport, type VChange, type VNode, type VPathNode } from './vfs.js';

/**
 * The in-memory file tree behind a `repr run` FUSE mount: what the run sees
 * of the client's files, learned on demand, plus the run's own changes kept
 * copy-on-write in a scratch directory. It knows nothing of FUSE or IPC, so
 * it is tested directly; the helper process turns FUSE ops into calls here.
 */

/** Asks the client what a path is; with `list` and a dir, the reply holds the full listing. */
export type QueryFn = (path: string, list: boolean) => Promise<VNode>;
/** Returns a host path (outside the mount) holding that content. Read-only. */
export type FetchFn = (hash: string, size: number) => Promise<string>;

/** Fails a file-system operation with an errno name; the helper turns it into FUSE's negative errno. */
export class TreeError extends Error {
  constructor(
    readonly errno: 'ENOENT' | 'EIO' | 'EROFS' | 'EEXIST' | 'ENOTDIR' | 'EISDIR' | 'ENOTEMPTY' | 'EXDEV' | 'EINVAL' | 'EPERM',
    message?: string,
  ) {
    super(message ? `${errno}: ${message}` : errno);
    this.name = 'TreeError';
  }
}

export interface FuseTreeOptions {
  roots: string[];
  mappings: VPathNode[];
  uid: number;
  gid: number;
  /** Where copy-up and created files go (a host directory outside the mount). */
  scratchDir: string;
  query: QueryFn;
  fetch: FetchFn;
  /** Injected so tests can pin times. */
  now?: () => number;
}

/** What getattr answers; times in ms since the epoch. */
export interface Attr {
  mode: number;
  uid: number;
  gid: number;
  size: number;
  nlink: number;
  mtime: number;
  atime: number;
  ctime: number;
}

/**
 * One path's current state. Objects keep their identity across rename, so an
 * open handle that holds one follows the file wherever it moves.
 */
export interface TreeNode {
  kind: NodeKind;
  /** file: content hash on the client, when known and the content is still the client's. */
  hash?: string;
  /** file: the scratch copy once the run opened it for writing (copy-up) or created it. */
  file?: string;
  /** file: the client's hash that `file` was copied from, until the run actually changes the bytes. */
  copiedFrom?: string;
  /** file: whether the run changed the bytes of `file` (written, truncated, created). */
  modified?: boolean;
  size: number;
  /** file: permission bits (setuid, setgid and sticky too, when the run set them); 0 for other kinds. */
  mode: number;
  target?: string;
  mtime: number;
  atime: number;
  ctime: number;
  /** dir: names of the present children, when the complete listing is known. */
  names?: Set<string>;
  /** The node came from a request mapping (for `mappedHits`). */
  mapped?: boolean;
  /** The path the client knows this content under, for learning its hash later. */
  clientPath?: string;
  /** In-flight copy-up, so concurrent writers copy once. */
  copying?: Promise<string>;
}

const ABSENT = (): TreeNode => ({ kind: 'absent', size: 0, mode: 0, mtime: 0, atime: 0, ctime: 0 });

/** libfuse renames a file unlinked while open to this name and removes it at release; never a change. */
const HIDDEN_PREFIX = '.fuse_hidden';

export class FuseTree {
  private readonly roots: string[];
  /** Synthesized ancestors of the roots and the one name each lists. */
  private readonly ancestors = new Map<string, Set<string>>();
  private readonly nodes = new Map<string, TreeNode>();
  /** Names under each dir that `nodes` holds (any kind), to merge listings with local state. */
  private readonly kids = new Map<string, Set<string>>();
  /** For every path the run touched: its node before the run's first change (absent if it did not exist). */
  private readonly before = new Map<string, TreeNode>();
  private readonly inflightQueries = new Map<string, Promise<VNode>>();
  private readonly inflightFetches = new Map<string, Promise<string>>();
  private readonly accessed = new Set<string>();
  private readonly listed = new Set<string>();
  private readonly hitPaths = new Set<string>();
  private queries = 0;
  private scratchSeq = 0;
  private readonly startMs: number;
  private readonly now: () => number;

  constructor(private readonly opts: FuseTreeOptions) {
    this.now = opts.now ?? Date.now;
    this.startMs = this.now();
    // A root inside another root is already covered by it.
    const sorted = [...new Set(opts.roots.map((r) => path.posix.resolve(r)))].sort();
    this.roots = sorted.filter((r) => !sorted.some((o) => o !== r && isUnder(r, o)));
    for (const root of this.roots) {
      let child = root;
      while (child !== '/') {
        const parent = path.posix.dirname(child);
        let names = this.ancestors.get(parent);
        if (!names) this.ancestors.set(parent, (names = new Set()));
        names.add(path.posix.basename(child));
        child = parent;
      }
    }
    for (const m of opts.mappings) {
      const p = path.posix.resolve(m.path);
      if (!this.rootOf(p)) continue;
      this.learn(p, m.node, true);
    }
  }

  // ---- reading ---------------------------------------------------------

  async getattr(p: string): Promise<Attr> {
    const names = this.ancestors.get(p);
    if (names && !this.rootOf(p)) {
      return { mode: 0o40555, uid: this.opts.uid, gid: this.opts.gid, size: 4096, nlink: 2, mtime: this.startMs, atime: this.startMs, ctime: this.startMs };
    }
    const n = await this.resolve(p);
    if (n.kind === 'absent') throw new TreeError('ENOENT');
    return this.attrOf(n);
  }

  attrOf(n: TreeNode): Attr {
    const base = { uid: this.opts.uid, gid: this.opts.gid, mtime: n.mtime, atime: n.atime, ctime: n.ctime };
    switch (n.kind) {
      case 'dir':
        return { ...base, mode: 0o40755, size: 4096, nlink: 2 };
      case 'symlink':
        return { ...base, mode: 0o120777, size: Buffer.byteLength(n.target ?? ''), nlink: 1 };
      default:
        return { ...base, mode: 0o100000 | n.mode, size: n.size, nlink: 1 };
    }
  }

  /** Names in a directory, merged with what the run changed there. */
  async readdir(p: string): Promise<string[]> {
    const synth = this.ancestors.get(p);
    if (synth && !this.rootOf(p)) return [...synth];
    const n = await this.resolve(p);
    if (n.kind === 'absent') throw new TreeError('ENOENT');
    if (n.kind !== 'dir') throw new TreeError('ENOTDIR');
    this.listed.add(p);
    return [...(await this.namesOf(p, n))];
  }

  async readlink(p: string): Promise<string> {
    const n = await this.existing(p);
    if (n.kind !== 'symlink') throw new TreeError('EINVAL');
    return n.target ?? '';
  }

  /** Checks that a path exists (access(2) with F_OK; permissions are left to the kernel). */
  async access(p: string): Promise<void> {
    if (this.ancestors.has(p) && !this.rootOf(p)) return;
    await this.existing(p);
  }

  /**
   * Opens a file for reading: the host path that holds its content now
   * (the scratch copy if the run changed it, else the fetched blob).
   */
  async openRead(p: string): Promise<{ node: TreeNode; hostPath: string }> {
    const n = await this.existing(p);
    if (n.kind === 'dir') throw new TreeError('EISDIR');
    if (n.kind !== 'file') throw new TreeError('EINVAL');
    if (n.file) return { node: n, hostPath: n.file };
    return { node: n, hostPath: await this.content(p, n) };
  }

  // ---- writing (copy-on-write) -----------------------------------------

  /** Opens a file for writing: copies the client's content up into scratch first unless truncating. */
  async openWrite(p: string, truncate: boolean): Promise<{ node: TreeNode; hostPath: string }> {
    const n = await this.existing(p);
    if (n.kind === 'dir') throw new TreeError('EISDIR');
    if (n.kind !== 'file') throw new TreeError('EINVAL');
    this.writable(p);
    const hostPath = await this.copyUp(p, n, truncate);
    if (truncate && n.size !== 0) {
      await truncateFile(hostPath, 0);
      this.noteTruncate(n, 0);
    }
    return { node: n, hostPath };
  }

  /** Creates a file (or opens an existing one for writing, when a racing create won). */
  async create(p: string, mode: number): Promise<{ node: TreeNode; hostPath: string }> {
    const parent = await this.parentDir(p);
    const cur = await this.resolve(p);
    if (cur.kind === 'dir') throw new TreeError('EISDIR');
    if (cur.kind === 'file') return this.openWrite(p, false);
    if (cur.kind !== 'absent') throw new TreeError('EEXIST');
    const hostPath = await this.newScratch();
    const t = this.now();
    this.put(p, { kind: 'file', file: hostPath, modified: true, size: 0, mode: mode & 0o7777, mtime: t, atime: t, ctime: t }, parent);
    return { node: this.nodes.get(p)!, hostPath };
  }

  /** Records a write through an open handle (the helper wrote the bytes into the scratch file). */
  noteWrite(n: TreeNode, end: number): void {
    n.size = Math.max(n.size, end);
    n.modified = true;
    n.mtime = n.ctime = this.now();
  }

  noteTruncate(n: TreeNode, size: number): void {
    n.size = size;
    n.modified = true;
    n.mtime = n.ctime = this.now();
  }

  async truncate(p: string, size: number): Promise<void> {
    const { node, hostPath } = await this.openWrite(p, size === 0);
    if (size !== 0) {
      await truncateFile(hostPath, size);
      this.noteTruncate(node, size);
    }
  }

  async unlink(p: string): Promise<void> {
    const parent = await this.parentDir(p);
    const n = await this.existing(p);
    if (n.kind === 'dir') throw new TreeError('EISDIR');
    this.remove(p, parent);
  }

  async mkdir(p: string): Promise<void> {
    const parent = await this.parentDir(p);
    if ((await this.resolve(p)).kind !== 'absent') throw new TreeError('EEXIST');
    const t = this.now();
    this.put(p, { kind: 'dir', names: new Set(), size: 0, mode: 0, mtime: t, atime: t, ctime: t }, parent);
  }

  async rmdir(p: string): Promise<void> {
    const parent = await this.parentDir(p);
    const n = await this.existing(p);
    if (n.kind !== 'dir') throw new TreeError('ENOTDIR');
    if ((await this.namesOf(p, n)).size > 0) throw new TreeError('ENOTEMPTY');
    this.remove(p, parent);
  }

  async symlink(target: string, p: string): Promise<void> {
    const parent = await this.parentDir(p);
    if ((await this.resolve(p)).kind !== 'absent') throw new TreeError('EEXIST');
    const t = this.now();
    this.put(p, { kind: 'symlink', target, size: 0, mode: 0, mtime: t, atime: t, ctime: t }, parent);
  }

  /**
   * Renames files and symlinks freely. A directory moves only when its whole
   * subtree is known here (typically made by the run); otherwise EXDEV, so
   * that `mv` falls back to copying what it reads.
   */
  async rename(src: string, dst: string): Promise<void> {
    if (src === dst) return;
    const srcParent = await this.parentDir(src);
    const dstParent = await this.parentDir(dst);
    const n = await this.existing(src);
    const old = await this.resolve(dst);
    if (n.kind === 'dir') {
      if (isUnder(dst, src)) throw new TreeError('EINVAL');
      if (old.kind !== 'absent' && old.kind !== 'dir') throw new TreeError('ENOTDIR');
      if (old.kind === 'dir' && (await this.namesOf(dst, old)).size > 0) throw new TreeError('ENOTEMPTY');
      if (!this.knownSubtree(src, n)) throw new TreeError('EXDEV', `${src} is not fully known locally`);
      if (old.kind === 'dir') this.remove(dst, dstParent);
      // The dir nodes move with their `names`, so only the top needs its parents' listings updated.
      const moved = [...this.nodes.keys()].filter((k) => k !== src && isUnder(k, src) && this.nodes.get(k)!.kind !== 'absent');
      this.remove(src, srcParent);
      this.put(dst, n, dstParent);
      for (const from of moved) {
        const to = dst + from.slice(src.length);
        const child = this.nodes.get(from)!;
        this.touch(from);
        this.setNode(from, ABSENT());
        this.touch(to);
        this.setNode(to, child);
      }
      return;
    }
    if (old.kind === 'dir') throw new TreeError('EISDIR');
    // An unchanged file is reported with its hash, so learn it while the client's path still names it.
    if (n.kind === 'file' && !n.file && !n.hash) await this.learnHash(src, n);
    this.remove(src, srcParent);
    this.put(dst, n, dstParent);
  }

  /** Tracks the mode bits of files, which come back to the client; a directory's stay as the client has them. */
  async chmod(p: string, mode: number): Promise<void> {
    const n = await this.existing(p);
    this.writable(p);
    if (n.kind !== 'file') return;
    const bits = mode & 0o7777;
    if (bits === n.mode) return;
    if (!n.file && !n.hash) await this.learnHash(p, n);
    this.touch(p);
    n.mode = bits;
    n.ctime = this.now();
  }

  async utimens(p: string, atime: number, mtime: number): Promise<void> {
    const n = await this.existing(p);
    this.writable(p);
    n.atime = atime;
    n.mtime = mtime;
    n.ctime = this.now();
  }

  // ---- results ----------------------------------------------------------

  /** What the run created, changed or removed, sorted by path; a removed dir once, not its children. */
  changes(): VChange[] {
    const out: VChange[] = [];
    const removedDirs: string[] = [];
    for (const p of [...this.before.keys()].sort()) {
      if (path.posix.basename(p).startsWith(HIDDEN_PREFIX)) continue;
      const was = this.before.get(p)!;
      const cur = this.nodes.get(p) ?? ABSENT();
      if (cur.kind === 'absent') {
        if (was.kind === 'absent') continue;
        if (removedDirs.some((d) => isUnder(p, d))) continue;
        if (was.kind === 'dir') removedDirs.push(p);
        out.push({ path: p, kind: 'absent' });
        continue;
      }
      if (cur.kind === 'dir') {
        if (was.kind !== 'dir') out.push({ path: p, kind: 'dir' });
        continue;
      }
      if (cur.kind === 'symlink') {
        if (was.kind !== 'symlink' || was.target !== cur.target) out.push({ path: p, kind: 'symlink', target: cur.target });
        continue;
      }
      const hash = cur.file && !cur.modified ? cur.copiedFrom : cur.hash;
      if (cur.file && cur.modified) {
        out.push({ path: p, kind: 'file', file: cur.file, size: cur.size, mode: cur.mode });
      } else if (was.kind !== 'file' || was.hash !== hash || was.mode !== cur.mode) {
        out.push({ path: p, kind: 'file', hash, size: cur.size, mode: cur.mode });
      }
    }
    return out;
  }

  report(): VAccessReport {
    return { accessed: [...this.accessed], listed: [...this.listed], mappedHits: this.hitPaths.size, queries: this.queries };
  }

  // ---- resolution --------------------------------------------------------

  /** The root a path is in, if any. */
  private rootOf(p: string): string | undefined {
    return this.roots.find((r) => isUnder(p, r));
  }

  /** An existing node; a synthesized ancestor is a fresh read-only dir (writers check `writable` first). */
  private async existing(p: string): Promise<TreeNode> {
    if (this.ancestors.has(p) && !this.rootOf(p)) {
      return { kind: 'dir', size: 0, mode: 0, mtime: this.startMs, atime: this.startMs, ctime: this.startMs };
    }
    const n = await this.resolve(p);
    if (n.kind === 'absent') throw new TreeError('ENOENT');
    return n;
  }

  /**
   * What a path under a root is: from the cache (mappings, earlier answers,
   * local changes), from the parent's known listing, or by asking the client.
   * Paths outside the roots are absent; they are no part of the run's view.
   */
  async resolve(p: string): Promise<TreeNode> {
    const root = this.rootOf(p);
    if (!root) return ABSENT();
    const known = this.nodes.get(p);
    if (known) {
      this.accessed.add(p);
      if (known.mapped) this.hitPaths.add(p);
      return known;
    }
    if (p !== root) {
      const parentPath = path.posix.dirname(p);
      const parent = await this.resolve(parentPath);
      this.accessed.add(p);
      if (parent.kind === 'absent') return ABSENT();
      if (parent.kind !== 'dir') throw new TreeError('ENOTDIR');
      const again = this.nodes.get(p);
      if (again) return again;
      if (parent.names) {
        this.learn(p, { kind: 'absent' }, false);
        return this.nodes.get(p)!;
      }
    }
    this.accessed.add(p);
    const answer = await this.ask(p, false);
    // A local change that raced with the question wins over the client's answer.
    return this.nodes.get(p) ?? this.learn(p, answer, false);
  }

  /** Present children of a dir; lists it on the client first when its listing is unknown. */
  private async namesOf(p: string, n: TreeNode): Promise<Set<string>> {
    if (n.names) return n.names;
    const answer = await this.ask(p, true);
    if (n.names) return n.names;
    if (answer.kind !== 'dir' || !answer.entries) throw new TreeError('EIO', `no listing for ${p}`);
    const names = new Set<string>();
    for (const e of answer.entries) {
      const cp = join(p, e.name);
      const local = this.nodes.get(cp) ?? this.learn(cp, e.node, false);
      if (local.kind !== 'absent') names.add(e.name);
    }
    // Entries the run created (or learned by lookup) that the listing lacks.
    for (const name of this.kids.get(p) ?? []) {
      if (this.nodes.get(join(p, name))!.kind !== 'absent') names.add(name);
    }
    n.names = names;
    return names;
  }

  /** Asks the client, once per path and kind of question at a time. */
  private ask(p: string, list: boolean): Promise<VNode> {
    const key = (list ? 'L' : 'Q') + p;
    let q = this.inflightQueries.get(key);
    if (!q) {
      this.queries++;
      q = this.opts.query(p, list).then(
        (v) => v,
        (err: unknown) => {
          throw new TreeError('EIO', `query ${p}: ${err instanceof Error ? err.message : String(err)}`);
        },
      );
      q.finally(() => this.inflightQueries.delete(key)).catch(() => {});
      this.inflightQueries.set(key, q);
    }
    return q;
  }

  /** Caches what the client said about a path (and a listing it carried). */
  private learn(p: string, v: VNode, mapped: boolean): TreeNode {
    // The worker binds each root into the sandbox by its path under the
    // mount, as root: a root that were a symlink would lead it to its own
    // files. Only a directory can be a root; anything else is not there.
    if (v.kind !== 'dir' && this.roots.includes(p)) v = { kind: 'absent' };
    const t = v.mtimeMs ?? this.startMs;
    const n: TreeNode = {
      kind: v.kind,
      hash: v.hash,
      size: v.size ?? 0,
      mode: v.kind === 'file' ? fileMode(v) : 0,
      target: v.target,
      mtime: t,
      atime: t,
      ctime: t,
      mapped: mapped || undefined,
      clientPath: p,
    };
    this.setNode(p, n);
    if (v.kind === 'dir' && v.entries) {
      n.names = new Set();
      for (const e of v.entries) {
        const cp = join(p, e.name);
        const child = this.nodes.get(cp) ?? this.learn(cp, e.node, mapped);
        if (child.kind !== 'absent') n.names.add(e.name);
      }
    }
    return n;
  }

  /** Learns the hash of a file known only from a listing (size, no hash). */
  private async learnHash(p: string, n: TreeNode): Promise<void> {
    const v = await this.ask(n.clientPath ?? p, false);
    if (n.hash || n.file) return;
    if (v.kind !== 'file' || v.hash === undefined) throw new TreeError('EIO', `${p} is no longer a file on the client`);
    n.hash = v.hash;
    if (v.size !== undefined) n.size = v.size;
  }

  /** The client's content of an unchanged file, fetched once per hash. */
  private async content(p: string, n: TreeNode): Promise<string> {
    if (!n.hash) await this.learnHash(p, n);
    const hash = n.hash!;
    let f = this.inflightFetches.get(hash);
    if (!f) {
      f = this.opts.fetch(hash, n.size).then(
        (v) => v,
        (err: unknown) => {
          throw new TreeError('EIO', `fetch ${hash}: ${err instanceof Error ? err.message : String(err)}`);
        },
      );
      this.inflightFetches.set(hash, f);
      // Only failures are forgotten; a fetched host path stays valid for the run.
      f.catch(() => this.inflightFetches.delete(hash));
    }
    return f;
  }

  /** Gives a file its own scratch copy, once even with concurrent writers. */
  private async copyUp(p: string, n: TreeNode, truncate: boolean): Promise<string> {
    if (n.file) return n.file;
    if (!n.copying) {
      n.copying = (async () => {
        const hostPath = await this.newScratch();
        if (!truncate) {
          const src = await this.content(p, n);
          await copyFile(src, hostPath);
        }
        this.touch(p);
        n.file = hostPath;
        n.copiedFrom = truncate ? undefined : n.hash;
        n.modified = truncate;
        n.hash = undefined;
        return hostPath;
      })();
      n.copying.finally(() => (n.copying = undefined)).catch(() => {});
    }
    return n.copying;
  }

  /** A new empty file in scratch; names already there (an earlier mount's leftovers) are skipped. */
  private async newScratch(): Promise<string> {
    for (;;) {
      const f = path.join(this.opts.scratchDir, `f${++this.scratchSeq}`);
      try {
        await (await open(f, 'wx')).close();
        return f;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      }
    }
  }

  /** The parent of a path about to change: a directory under a root. */
  private async parentDir(p: string): Promise<TreeNode> {
    this.writable(p);
    const root = this.rootOf(p);
    if (p === root) throw new TreeError('EPERM', 'cannot replace a root');
    const parent = await this.resolve(path.posix.dirname(p));
    if (parent.kind === 'absent') throw new TreeError('ENOENT');
    if (parent.kind !== 'dir') throw new TreeError('ENOTDIR');
    return parent;
  }

  private writable(p: string): void {
    if (!this.rootOf(p)) throw new TreeError(this.ancestors.has(p) || this.ancestors.has(path.posix.dirname(p)) ? 'EROFS' : 'ENOENT');
  }

  /** Whether a dir's subtree is wholly known here, so moving it loses nothing. */
  private knownSubtree(p: string, n: TreeNode): boolean {
    if (!n.names) return false;
    for (const name of n.names) {
      const cp = join(p, name);
      const c = this.nodes.get(cp);
      if (!c) return false;
      if (c.kind === 'dir' && !this.knownSubtree(cp, c)) return false;
      if (c.kind === 'file' && !c.file && !c.hash) return false;
    }
    return true;
  }

  /** Remembers a path's state before the run's first change to it. */
  private touch(p: string): void {
    if (this.before.has(p)) return;
    const n = this.nodes.get(p);
    this.before.set(p, n ? { ...n, names: undefined } : ABSENT());
  }

  private put(p: string, n: TreeNode, parent: TreeNode): void {
    this.touch(p);
    this.setNode(p, n);
    parent.names?.add(path.posix.basename(p));
  }

  private remove(p: string, parent: TreeNode): void {
    this.touch(p);
    this.setNode(p, ABSENT());
    parent.names?.delete(path.posix.basename(p));
  }

  private setNode(p: string, n: TreeNode): void {
    this.nodes.set(p, n);
    if (p === '/') return;
    const dir = path.posix.dirname(p);
    let k = this.kids.get(dir);
    if (!k) this.kids.set(dir, (k = new Set()));
    k.add(path.posix.basename(p));
  }
}

function isUnder(p: string, dir: string): boolean {
  return p === dir || dir === '/' || p.startsWith(`${dir}/`);
}

function join(dir: string, name: string): string {
  return dir === '/' ? `/${name}` : `${dir}/${name}`;
}
