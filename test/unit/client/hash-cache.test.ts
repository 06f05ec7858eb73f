import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { lstatSync, mkdirSync, readdirSync, renameSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { ManualClock } from '../../../src/common/clock.js';
import { SHA256 } from '../../../src/common/digest.js';
import { HashCache, RACY_MARGIN_MS } from '../../../src/client/hash-cache.js';
import { tmpDir } from '../../../support/tmp.js';

const HOUR_NS = 3600n * 1_000_000_000n;

/** Sets a file's mtime to the nanosecond (Node's utimes goes through a double and loses some). */
function setMtimeNs(file: string, ns: bigint): void {
  const r = spawnSync('touch', ['-m', '-d', `@${ns / 1_000_000_000n}.${String(ns % 1_000_000_000n).padStart(9, '0')}`, file], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  assert.equal(lstatSync(file, { bigint: true }).mtimeNs, ns, 'this file system keeps ns mtimes');
}

const st = (file: string) => lstatSync(file, { bigint: true });

/** A tree `root` with files written an hour ago at an mtime with a sub-second part. */
function tree(files: Record<string, string>, mtimeNs = BigInt(Date.now()) * 1_000_000n - HOUR_NS + 123_456_789n): string {
  const root = path.join(tmpDir('repr-hc-'), 'proj');
  for (const [rel, text] of Object.entries(files)) {
    mkdirSync(path.dirname(path.join(root, rel)), { recursive: true });
    writeFileSync(path.join(root, rel), text);
    setMtimeNs(path.join(root, rel), mtimeNs);
  }
  return root;
}

/** A copy as `cp -a` makes it: new inodes and ctimes, mtimes kept. */
function copyTree(root: string): string {
  const copy = path.join(tmpDir('repr-hc-copy-'), 'proj');
  assert.equal(spawnSync('cp', ['-a', root, copy]).status, 0);
  return copy;
}

describe('the hash cache: when a file is known unchanged without reading it', () => {
  const clock = new ManualClock(Date.now());

  const learned = async (root: string, rels: string[], cache = HashCache.inMemory(clock)) => {
    cache.addRoots([root]);
    for (const rel of rels) await cache.remember(path.join(root, rel), st(path.join(root, rel)), `hash-of-${rel}`, clock.now());
    return cache;
  };

  it('knows an unchanged file, and sees an edit in place even with the same size and the mtime put back', async () => {
    const root = tree({ 'a.c': 'int a;\n', 'b.c': 'int b;\n' });
    const cache = await learned(root, ['a.c', 'b.c']);
    assert.equal(await cache.lookup(path.join(root, 'a.c'), st(path.join(root, 'a.c'))), 'hash-of-a.c');
    const was = st(path.join(root, 'b.c')).mtimeNs;
    writeFileSync(path.join(root, 'b.c'), 'int B;\n');
    setMtimeNs(path.join(root, 'b.c'), was);
    assert.equal(st(path.join(root, 'b.c')).size, 7n);
    assert.equal(await cache.lookup(path.join(root, 'b.c'), st(path.join(root, 'b.c'))), undefined, 'same inode, new ctime: changed');
  });

  it('serves a copy of the tree made with cp -a elsewhere, across processes, by path in the root, size and ns mtime', async () => {
    const records = tmpDir('repr-hc-records-');
    const root = tree({ 'src/a.c': 'int a;\n', 'include/a.h': 'extern int a;\n' });
    await (await learned(root, ['src/a.c', 'include/a.h'], HashCache.onDisk(records, SHA256, clock))).save();
    const copy = copyTree(root);
    const later = HashCache.onDisk(records, SHA256, clock);
    later.addRoots([copy]);
    assert.equal(await later.lookup(path.join(copy, 'src/a.c'), st(path.join(copy, 'src/a.c'))), 'hash-of-src/a.c');
    assert.equal(await later.lookup(path.join(copy, 'include/a.h'), st(path.join(copy, 'include/a.h'))), 'hash-of-include/a.h');
    // The copy's entries are its own from then on: an edit in place there is seen as in the original.
    writeFileSync(path.join(copy, 'src/a.c'), 'int A;\n');
    setMtimeNs(path.join(copy, 'src/a.c'), st(path.join(root, 'src/a.c')).mtimeNs);
    assert.equal(await later.lookup(path.join(copy, 'src/a.c'), st(path.join(copy, 'src/a.c'))), undefined);
    // Another digest function's hashes are kept apart.
    const blake = HashCache.onDisk(records, { ...SHA256, name: 'blake3' }, clock);
    blake.addRoots([copy]);
    assert.equal(await blake.lookup(path.join(copy, 'include/a.h'), st(path.join(copy, 'include/a.h'))), undefined);
  });

  it('serves a fresh copy put at the same path, whose files may get the freed inode numbers back', async () => {
    const root = tree({ 'a.c': 'int a;\n', 'b/b.c': 'int b;\n' });
    const cache = await learned(root, ['a.c', 'b/b.c']);
    const copy = copyTree(root);
    rmSync(root, { recursive: true });
    assert.equal(spawnSync('cp', ['-a', copy, root]).status, 0);
    assert.equal(await cache.lookup(path.join(root, 'a.c'), st(path.join(root, 'a.c'))), 'hash-of-a.c');
    assert.equal(await cache.lookup(path.join(root, 'b/b.c'), st(path.join(root, 'b/b.c'))), 'hash-of-b/b.c');
  });

  it('knows files at their own path for a caller that never named its roots', async () => {
    const root = tree({ 'a.c': 'int a;\n' });
    const cache = HashCache.inMemory(clock);
    await cache.remember(path.join(root, 'a.c'), st(path.join(root, 'a.c')), 'hash-of-a.c', clock.now());
    assert.equal(await cache.lookup(path.join(root, 'a.c'), st(path.join(root, 'a.c'))), 'hash-of-a.c');
  });

  it('does not match a copy by mtime when the mtime has no sub-second part (set from an archive, not by a write)', async () => {
    const root = tree({ 'package.json': '{"version":"1.2.3"}\n' }, 499162500n * 1_000_000_000n);
    const cache = await learned(root, ['package.json']);
    const copy = copyTree(root);
    cache.addRoots([copy]);
    assert.equal(await cache.lookup(path.join(copy, 'package.json'), st(path.join(copy, 'package.json'))), undefined);
    assert.equal(await cache.lookup(path.join(root, 'package.json'), st(path.join(root, 'package.json'))), 'hash-of-package.json', 'same inode: still known');
  });

  it('does not match a copy whose file differs in size or sits at another path in its root', async () => {
    const root = tree({ 'a.c': 'int a;\n' });
    const cache = await learned(root, ['a.c']);
    const copy = copyTree(root);
    cache.addRoots([copy]);
    const was = st(path.join(copy, 'a.c')).mtimeNs;
    writeFileSync(path.join(copy, 'a.c'), 'int aa;\n');
    setMtimeNs(path.join(copy, 'a.c'), was);
    assert.equal(await cache.lookup(path.join(copy, 'a.c'), st(path.join(copy, 'a.c'))), undefined);
    mkdirSync(path.join(copy, 'sub'));
    spawnSync('cp', ['-a', path.join(root, 'a.c'), path.join(copy, 'sub', 'a.c')]);
    assert.equal(await cache.lookup(path.join(copy, 'sub', 'a.c'), st(path.join(copy, 'sub', 'a.c'))), undefined);
  });

  it('does not trust a hash taken within the racy margin of the mtime: the file may have been written again in the same tick', async () => {
    const root = tree({ 'gen.h': '#define X 1\n' });
    const file = path.join(root, 'gen.h');
    const mtimeMs = Number(st(file).mtimeNs / 1_000_000n);
    const cache = HashCache.inMemory(clock);
    cache.addRoots([root]);
    await cache.remember(file, st(file), 'racy', mtimeMs + 1);
    assert.equal(await cache.lookup(file, st(file)), undefined);
    await cache.remember(file, st(file), 'settled', mtimeMs + RACY_MARGIN_MS + 1);
    assert.equal(await cache.lookup(file, st(file)), 'settled');
  });

  it('takes a replaced file with the same size and the same ns mtime copied onto it as unchanged: the trade-off, as in rsync', async () => {
    const root = tree({ 'a.c': 'int a;\n' });
    const cache = await learned(root, ['a.c']);
    const was = st(path.join(root, 'a.c')).mtimeNs;
    writeFileSync(path.join(root, 'a.c.tmp'), 'int b;\n');
    setMtimeNs(path.join(root, 'a.c.tmp'), was);
    renameSync(path.join(root, 'a.c.tmp'), path.join(root, 'a.c'));
    assert.equal(await cache.lookup(path.join(root, 'a.c'), st(path.join(root, 'a.c'))), 'hash-of-a.c');
  });

  it('starts empty from a torn or foreign file, and keeps what other processes saved meanwhile', async () => {
    const records = tmpDir('repr-hc-torn-');
    mkdirSync(path.join(records, 'hashes-sha256'));
    writeFileSync(path.join(records, 'hashes-sha256', 'torn.json'), '{"version":1,"root":"/x","files":{"a":[1,2]}');
    const root = tree({ 'a.c': 'a\n', 'b.c': 'b\n' });
    const one = HashCache.onDisk(records, SHA256, clock);
    const two = HashCache.onDisk(records, SHA256, clock);
    await (await learned(root, ['a.c'], one)).save();
    await (await learned(root, ['b.c'], two)).save();
    const both = HashCache.onDisk(records, SHA256, clock);
    both.addRoots([root]);
    assert.equal(await both.lookup(path.join(root, 'a.c'), st(path.join(root, 'a.c'))), 'hash-of-a.c');
    assert.equal(await both.lookup(path.join(root, 'b.c'), st(path.join(root, 'b.c'))), 'hash-of-b.c');
  });

  it('drops the trees used longest ago once over its byte budget, never the ones just written', async () => {
    const records = tmpDir('repr-hc-evict-');
    const roots = [tree({ 'a.c': 'a\n' }), tree({ 'b.c': 'b\n' }), tree({ 'c.c': 'c\n' })];
    const budget = 400;
    const dir = path.join(records, 'hashes-sha256');
    for (const [i, root] of roots.entries()) {
      await (await learned(root, [`${'abc'[i]}.c`], HashCache.onDisk(records, SHA256, clock, budget))).save();
      // Use ages the trees by their files' mtimes; an hour apart, so that no two share a timestamp tick.
      for (const f of readdirSync(dir)) {
        const at = lstatSync(path.join(dir, f)).mtimeMs - 3600_000;
        utimesSync(path.join(dir, f), at / 1000, at / 1000);
      }
    }
    const sizes = readdirSync(dir).map((f) => lstatSync(path.join(dir, f)).size);
    assert.ok(sizes.length === 2 && sizes[0]! + sizes[1]! <= budget, `two trees of ~200 B fit in ${budget} B: ${sizes}`);
    const later = HashCache.onDisk(records, SHA256, clock);
    later.addRoots(roots);
    assert.equal(await later.lookup(path.join(roots[0]!, 'a.c'), st(path.join(roots[0]!, 'a.c'))), undefined, 'the oldest went');
    assert.equal(await later.lookup(path.join(roots[2]!, 'c.c'), st(path.join(roots[2]!, 'c.c'))), 'hash-of-c.c');
  });
});
