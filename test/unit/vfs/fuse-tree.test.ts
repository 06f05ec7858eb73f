import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFile, readdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { describe, it } from 'node:test';
import { FuseTree, TreeError } from '../../../src/vfs/fuse-tree.js';
import type { VNode, VPathNode } from '../../../src/vfs/vfs.js';
import { tmpDir } from '../../../support/tmp.js';

const sha256 = (s: string): string => createHash('sha256').update(s).digest('hex');

/**
 * An in-memory client: files by path. Listings carry sizes but no hashes,
 * as the real client's do; fetch writes the content into a cache dir by hash.
 */
class MemClient {
  readonly queries: string[] = [];
  readonly fetches: string[] = [];
  readonly cache = tmpDir('repr-tree-cache-');
  /** Set to hold every query until released, to observe single flight. */
  gate?: Promise<void>;
  failing = new Set<string>();
  private readonly files = new Map<string, string>();
  private readonly dirs = new Set<string>();

  constructor(files: Record<string, string>) {
    for (const [p, content] of Object.entries(files)) {
      this.files.set(p, content);
      for (let d = path.posix.dirname(p); d !== '/'; d = path.posix.dirname(d)) this.dirs.add(d);
    }
  }

  node(p: string, withHash = true): VNode {
    const c = this.files.get(p);
    if (c !== undefined) return { kind: 'file', size: Buffer.byteLength(c), hash: withHash ? sha256(c) : undefined, mtimeMs: 1_000_000 };
    if (this.dirs.has(p)) return { kind: 'dir', mtimeMs: 2_000_000 };
    return { kind: 'absent' };
  }

  query = async (p: string, list: boolean): Promise<VNode> => {
    this.queries.push(`${list ? 'list' : 'stat'} ${p}`);
    await this.gate;
    if (this.failing.has(p)) throw new Error('client unreachable');
    const n = this.node(p);
    if (list && n.kind === 'dir') {
      const names = new Set<string>();
      for (const k of [...this.files.keys(), ...this.dirs]) if (path.posix.dirname(k) === p) names.add(path.posix.basename(k));
      n.entries = [...names].sort().map((name) => ({ name, node: this.node(`${p}/${name}`, false) }));
    }
    return n;
  };

  fetch = async (hash: string, _size: number): Promise<string> => {
    this.fetches.push(hash);
    await this.gate;
    const content = [...this.files.values()].find((c) => sha256(c) === hash);
    if (content === undefined) throw new Error('no such blob');
    const f = path.join(this.cache, hash);
    await writeFile(f, content);
    return f;
  };

  /** Every path with its node, dirs with their listings: a request's full mappings. */
  mappings(): VPathNode[] {
    return [...this.dirs, ...this.files.keys()].map((p) => ({ path: p, node: this.node(p) }));
  }
}

const ROOT = '/home/u/p';
const FILES = {
  '/home/u/p/a.c': 'int a;\n',
  '/home/u/p/inc/a.h': '#define A 1\n',
  '/home/u/p/inc/b.h': '#define B 2\n',
  '/home/u/p/sub/deep/x.txt': 'x\n',
  '/home/u/p/tool': 'tool\n',
};

function setup(opts: { mappings?: VPathNode[] } = {}): { tree: FuseTree; client: MemClient; scratch: string } {
  const client = new MemClient(FILES);
  const scratch = tmpDir('repr-tree-scratch-');
  const tree = new FuseTree({
    roots: [ROOT],
    mappings: opts.mappings ?? [],
    uid: 1000,
    gid: 1000,
    scratchDir: scratch,
    query: client.query,
    fetch: client.fetch,
    now: () => 5_000_000,
  });
  return { tree, client, scratch };
}

const errno = (code: string) => (e: unknown) => e instanceof TreeError && e.errno === code;

describe('FuseTree', () => {
  it('synthesizes the ancestors of the roots and shows nothing else', async () => {
    const { tree, client } = setup();
    assert.deepEqual(await tree.readdir('/'), ['home']);
    assert.deepEqual(await tree.readdir('/home/u'), ['p']);
    assert.equal((await tree.getattr('/home')).mode, 0o40555);
    await assert.rejects(tree.getattr('/etc'), errno('ENOENT'));
    await assert.rejects(tree.getattr('/home/other'), errno('ENOENT'));
    await assert.rejects(tree.mkdir('/home/u/new'), errno('EROFS'));
    await assert.rejects(tree.create('/home/x', 0o644), errno('EROFS'));
    await assert.rejects(tree.rmdir('/home/u'), errno('EROFS'));
    assert.deepEqual(client.queries, []);
    assert.deepEqual(tree.report().accessed, [], 'ancestors and outside paths are not client accesses');
  });

  it('resolves paths on demand and caches every answer, absent ones included', async () => {
    const { tree, client } = setup();
    const a = await tree.getattr('/home/u/p/inc/a.h');
    assert.equal(a.size, 12);
    assert.equal(a.mtime, 1_000_000);
    assert.equal(a.mode, 0o100644);
    assert.equal(a.uid, 1000);
    await assert.rejects(tree.getattr('/home/u/p/inc/missing.h'), errno('ENOENT'));
    await assert.rejects(tree.getattr('/home/u/p/inc/missing.h'), errno('ENOENT'));
    await assert.rejects(tree.getattr('/home/u/p/nodir/x.h'), errno('ENOENT'));
    await assert.rejects(tree.getattr('/home/u/p/nodir/y.h'), errno('ENOENT'));
    assert.deepEqual(client.queries, [
      'stat /home/u/p',
      'stat /home/u/p/inc',
      'stat /home/u/p/inc/a.h',
      'stat /home/u/p/inc/missing.h',
      'stat /home/u/p/nodir',
    ]);
    // Once a dir is listed, a name not in the listing is absent without a question.
    assert.deepEqual(await tree.readdir('/home/u/p/sub'), ['deep']);
    await assert.rejects(tree.getattr('/home/u/p/sub/nothing'), errno('ENOENT'));
    assert.equal(client.queries.at(-1), 'list /home/u/p/sub');
    const r = tree.report();
    assert.deepEqual(r.accessed, [
      '/home/u/p',
      '/home/u/p/inc',
      '/home/u/p/inc/a.h',
      '/home/u/p/inc/missing.h',
      '/home/u/p/nodir',
      '/home/u/p/nodir/x.h',
      '/home/u/p/nodir/y.h',
      '/home/u/p/sub',
      '/home/u/p/sub/nothing',
    ]);
    assert.deepEqual(r.listed, ['/home/u/p/sub']);
    assert.equal(r.queries, client.queries.length);
  });

  it('answers from mappings without a single query', async () => {
    const client0 = new MemClient(FILES);
    const { tree, client } = setup({
      mappings: client0.mappings().map((m) => (m.node.kind === 'dir' ? { path: m.path, node: { ...m.node, entries: undefined } } : m)),
    });
    // Mapped files carry hashes, so reading costs a fetch but no question.
    const { hostPath } = await tree.openRead('/home/u/p/inc/b.h');
    assert.equal(await readFile(hostPath, 'utf8'), '#define B 2\n');
    await tree.getattr('/home/u/p/sub/deep/x.txt');
    assert.deepEqual(client.queries, []);
    assert.equal(tree.report().mappedHits, 2, 'known paths answer directly, without walking their parents');
    // Mappings without listings leave the listing (and unknown names) to the client.
    await assert.rejects(tree.getattr('/home/u/p/inc/c.h'), errno('ENOENT'));
    assert.deepEqual(client.queries, ['stat /home/u/p/inc/c.h']);
  });

  it('makes identical concurrent queries and fetches once', async () => {
    const { tree, client } = setup();
    let release!: () => void;
    client.gate = new Promise((r) => (release = r));
    const all = Promise.all([tree.openRead('/home/u/p/a.c'), tree.openRead('/home/u/p/a.c'), tree.getattr('/home/u/p/a.c')]);
    await new Promise((r) => setTimeout(r, 10));
    release();
    const [r1, r2] = await all;
    assert.equal(r1.hostPath, r2.hostPath);
    assert.deepEqual(client.queries, ['stat /home/u/p', 'stat /home/u/p/a.c']);
    assert.equal(client.fetches.length, 1);
  });

  it('learns the hash of a file known from a listing before fetching it', async () => {
    const { tree, client } = setup();
    assert.deepEqual(await tree.readdir('/home/u/p/inc'), ['a.h', 'b.h']);
    assert.equal((await tree.getattr('/home/u/p/inc/b.h')).size, 12);
    const { hostPath } = await tree.openRead('/home/u/p/inc/b.h');
    assert.equal(await readFile(hostPath, 'utf8'), '#define B 2\n');
    assert.deepEqual(client.queries.slice(-2), ['list /home/u/p/inc', 'stat /home/u/p/inc/b.h']);
  });

  it('fails with EIO when the client cannot answer, and asks again next time', async () => {
    const { tree, client } = setup();
    await tree.getattr('/home/u/p');
    client.failing.add('/home/u/p/a.c');
    await assert.rejects(tree.getattr('/home/u/p/a.c'), errno('EIO'));
    client.failing.clear();
    assert.equal((await tree.getattr('/home/u/p/a.c')).size, 7);
  });

  it('merges a listing with local changes: created names appear, removed ones do not', async () => {
    const { tree } = setup();
    await tree.create('/home/u/p/inc/new.h', 0o644);
    await tree.unlink('/home/u/p/inc/a.h');
    await tree.mkdir('/home/u/p/inc/d');
    assert.deepEqual((await tree.readdir('/home/u/p/inc')).sort(), ['b.h', 'd', 'new.h']);
    await assert.rejects(tree.getattr('/home/u/p/inc/a.h'), errno('ENOENT'));
  });

  it('writes copy-on-write and reports exactly what changed', async () => {
    const { tree, client, scratch } = setup();
    // Created then written.
    const created = await tree.create('/home/u/p/new.txt', 0o755);
    await writeFile(created.hostPath, 'hello');
    tree.noteWrite(created.node, 5);
    // Modified: copied up first.
    const mod = await tree.openWrite('/home/u/p/a.c', false);
    assert.equal(await readFile(mod.hostPath, 'utf8'), 'int a;\n');
    await writeFile(mod.hostPath, 'int a;\nint b;\n');
    tree.noteWrite(mod.node, 14);
    assert.equal((await tree.getattr('/home/u/p/a.c')).size, 14);
    assert.equal((await tree.getattr('/home/u/p/a.c')).mtime, 5_000_000, 'changed files get real times');
    // Opened for writing but never written: still the client's content.
    await tree.openWrite('/home/u/p/inc/b.h', false);
    // Renamed without being read: its hash is learned, no fetch.
    const fetchesBefore = client.fetches.length;
    await tree.rename('/home/u/p/inc/a.h', '/home/u/p/inc/renamed.h');
    // chmod of an unchanged file: a change with its hash, no copy-up.
    await tree.chmod('/home/u/p/tool', 0o755);
    assert.equal(client.fetches.length, fetchesBefore);
    // Removed; created and removed (no change); a dir made, one made and removed; a symlink.
    await tree.unlink('/home/u/p/sub/deep/x.txt');
    await tree.create('/home/u/p/tmp', 0o644);
    await tree.unlink('/home/u/p/tmp');
    await tree.mkdir('/home/u/p/made');
    await tree.mkdir('/home/u/p/gone');
    await tree.rmdir('/home/u/p/gone');
    await tree.symlink('a.c', '/home/u/p/link');
    // libfuse's stand-in for a file unlinked while open is never reported.
    await tree.rename('/home/u/p/new.txt', '/home/u/p/.fuse_hidden0001');
    await tree.rename('/home/u/p/.fuse_hidden0001', '/home/u/p/new.txt');
    const changes = tree.changes();
    for (const c of changes) if (c.file) assert.ok(c.file.startsWith(scratch));
    assert.deepEqual(
      changes.map((c) => ({ ...c, file: c.file && 'SCRATCH' })),
      [
        { path: '/home/u/p/a.c', kind: 'file', file: 'SCRATCH', size: 14, mode: 0o644 },
        { path: '/home/u/p/inc/a.h', kind: 'absent', file: undefined },
        { path: '/home/u/p/inc/renamed.h', kind: 'file', hash: sha256('#define A 1\n'), size: 12, mode: 0o644, file: undefined },
        { path: '/home/u/p/link', kind: 'symlink', target: 'a.c', file: undefined },
        { path: '/home/u/p/made', kind: 'dir', file: undefined },
        { path: '/home/u/p/new.txt', kind: 'file', file: 'SCRATCH', size: 5, mode: 0o755 },
        { path: '/home/u/p/sub/deep/x.txt', kind: 'absent', file: undefined },
        { path: '/home/u/p/tool', kind: 'file', hash: sha256('tool\n'), size: 5, mode: 0o755, file: undefined },
      ],
    );
    // The client's content and the fetched blobs are never written.
    for (const f of await readdir(client.cache))
      assert.ok([...Object.values(FILES)].map(sha256).includes(f) && (await readFile(path.join(client.cache, f), 'utf8')) !== 'int a;\nint b;\n');
  });

  it("shows the client's permission bits and reports every mode bit the run changed", async () => {
    const { tree } = setup({
      mappings: [
        { path: '/home/u/p/a.c', node: { kind: 'file', hash: sha256('int a;\n'), size: 7, mode: 0o600 } },
        { path: '/home/u/p/tool', node: { kind: 'file', hash: sha256('tool\n'), size: 5, executable: true } },
      ],
    });
    assert.equal((await tree.getattr('/home/u/p/a.c')).mode, 0o100600);
    assert.equal((await tree.getattr('/home/u/p/tool')).mode, 0o100755, 'a client that sends no mode: by its executable bit');
    // Same executable bit, other bits: still a change. Back to what the client has: none.
    await tree.chmod('/home/u/p/a.c', 0o640);
    await tree.chmod('/home/u/p/tool', 0o100775);
    await tree.chmod('/home/u/p/tool', 0o755);
    const made = await tree.create('/home/u/p/suid', 0o644);
    await writeFile(made.hostPath, 'x');
    tree.noteWrite(made.node, 1);
    await tree.chmod('/home/u/p/suid', 0o4755);
    assert.equal((await tree.getattr('/home/u/p/suid')).mode, 0o104755);
    assert.deepEqual(
      tree.changes().map((c) => [c.path, c.mode?.toString(8)]),
      [
        ['/home/u/p/a.c', '640'],
        ['/home/u/p/suid', '4755'],
      ],
    );
  });

  it('copies up once for concurrent writers', async () => {
    const { tree, client } = setup();
    const [w1, w2] = await Promise.all([tree.openWrite('/home/u/p/a.c', false), tree.openWrite('/home/u/p/a.c', false)]);
    assert.equal(w1.hostPath, w2.hostPath);
    assert.equal(client.fetches.length, 1);
    // Truncating needs no content at all.
    const t = await tree.openWrite('/home/u/p/tool', true);
    assert.equal(await readFile(t.hostPath, 'utf8'), '');
    assert.equal((await tree.getattr('/home/u/p/tool')).size, 0);
    assert.equal(client.fetches.length, 1);
  });

  it('refuses rmdir of a non-empty dir, listing it first when needed', async () => {
    const { tree, client } = setup();
    await assert.rejects(tree.rmdir('/home/u/p/sub'), errno('ENOTEMPTY'));
    assert.ok(client.queries.includes('list /home/u/p/sub'));
    await tree.unlink('/home/u/p/sub/deep/x.txt');
    await tree.rmdir('/home/u/p/sub/deep');
    await tree.rmdir('/home/u/p/sub');
    // A removed dir is reported once, not its children.
    assert.deepEqual(tree.changes(), [{ path: '/home/u/p/sub', kind: 'absent' }]);
  });

  it('renames a dir only when its subtree is known here; otherwise EXDEV', async () => {
    const { tree } = setup();
    await assert.rejects(tree.rename('/home/u/p/inc', '/home/u/p/inc2'), errno('EXDEV'));
    await tree.mkdir('/home/u/p/d');
    await tree.mkdir('/home/u/p/d/e');
    const f = await tree.create('/home/u/p/d/e/f', 0o644);
    tree.noteWrite(f.node, 0);
    await tree.rename('/home/u/p/a.c', '/home/u/p/d/a.c');
    await tree.rename('/home/u/p/d', '/home/u/p/d2');
    await assert.rejects(tree.getattr('/home/u/p/d/e'), errno('ENOENT'));
    assert.deepEqual((await tree.readdir('/home/u/p/d2')).sort(), ['a.c', 'e']);
    assert.deepEqual(await tree.readdir('/home/u/p/d2/e'), ['f']);
    assert.deepEqual(
      tree.changes().map((c) => [c.path, c.kind, c.hash ? 'hash' : c.file ? 'file' : '']),
      [
        ['/home/u/p/a.c', 'absent', ''],
        ['/home/u/p/d2', 'dir', ''],
        ['/home/u/p/d2/a.c', 'file', 'hash'],
        ['/home/u/p/d2/e', 'dir', ''],
        ['/home/u/p/d2/e/f', 'file', 'file'],
      ],
    );
    await assert.rejects(tree.rename('/home/u/p/d2', '/home/u/p/d2/e/x'), errno('EINVAL'));
  });

  it('keeps times and symlink targets in memory', async () => {
    const { tree } = setup();
    await tree.utimens('/home/u/p/a.c', 7_000, 8_000);
    const a = await tree.getattr('/home/u/p/a.c');
    assert.equal(a.mtime, 8_000);
    assert.equal(a.atime, 7_000);
    await tree.symlink('../x', '/home/u/p/l');
    assert.equal(await tree.readlink('/home/u/p/l'), '../x');
    assert.equal((await tree.getattr('/home/u/p/l')).mode, 0o120777);
    await assert.rejects(tree.readlink('/home/u/p/a.c'), errno('EINVAL'));
    assert.deepEqual(
      tree.changes().map((c) => c.path),
      ['/home/u/p/l'],
      'times are not changes',
    );
  });
});
