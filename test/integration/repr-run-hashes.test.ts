import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import { lstatSync, mkdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { runReprToEnd } from '../../support/spawn-server.js';
import { type ServerProcess, startServerProcess } from '../../support/servers.js';
import { tmpDir } from '../../support/tmp.js';

/*
 * What `repr run` reads of the client's disk, and how often it asks: the real
 * CLI against a real server whose executors mount the client's files.
 */

interface RunStats {
  client: { hashed: number; answered: number };
  runs: { exitCode: number; stats: { queries: number } }[];
}

/** Files written an hour ago, at one mtime with a sub-second part, as a checkout older than the racy margin. */
function writeTree(root: string, files: Record<string, string>): void {
  for (const [rel, text] of Object.entries(files)) {
    mkdirSync(path.dirname(path.join(root, rel)), { recursive: true });
    writeFileSync(path.join(root, rel), text);
  }
  touchNs(
    Object.keys(files).map((rel) => path.join(root, rel)),
    BigInt(Date.now() - 3600_000) * 1_000_000n + 123_456_789n,
  );
}

/** Sets mtimes to the nanosecond, as an editor that puts the old mtime back would. */
function touchNs(files: string[], ns: bigint): void {
  const r = spawnSync('touch', ['-m', '-d', `@${ns / 1_000_000_000n}.${String(ns % 1_000_000_000n).padStart(9, '0')}`, ...files], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
}

describe('repr run: hashes kept across fresh copies of a tree, digests in listings', () => {
  let server: ServerProcess;
  let records: string;

  before(async () => {
    server = await startServerProcess(['--data-dir', tmpDir('repr-rh-server-'), '--executors', '2']);
    records = tmpDir('repr-rh-records-');
  });

  after(async () => {
    await server?.stop();
  });

  /** `repr run` in `cwd`: its result and its --stats-json. */
  const run = async (cwd: string, cmd: string) => {
    const statsFile = path.join(tmpDir('repr-rh-stats-'), 's.json');
    const r = await runReprToEnd(['run', '--server', server.url, '--stats-json', statsFile, '--', '/bin/sh', '-c', cmd], {
      cwd,
      env: { REPR_RUN_RECORDS: records },
    });
    assert.equal(r.code, 0, r.stderr);
    return { ...r, stats: JSON.parse(readFileSync(statsFile, 'utf8')) as RunStats };
  };

  it('re-hashes nothing in a cp -a copy of a tree elsewhere, and still sees an edit in place that kept size and mtime', async () => {
    const files: Record<string, string> = {};
    for (let i = 0; i < 60; i++) files[`src/f${String(i).padStart(2, '0')}.txt`] = `line ${String(i).padStart(2, '0')}\n`;
    const original = path.join(tmpDir('repr-rh-a-'), 'proj');
    writeTree(original, files);
    const all = Object.values(files).join('');
    const first = await run(original, 'cat src/*');
    assert.equal(first.stdout, all);
    assert.equal(first.stats.client.hashed, 60);

    const copy = path.join(tmpDir('repr-rh-b-'), 'proj');
    assert.equal(spawnSync('cp', ['-a', original, copy]).status, 0);
    assert.notEqual(lstatSync(path.join(copy, 'src/f00.txt')).ino, lstatSync(path.join(original, 'src/f00.txt')).ino);
    const fresh = await run(copy, 'cat src/*');
    assert.equal(fresh.stdout, all);
    assert.equal(fresh.stats.client.hashed, 0, 'a fresh copy re-hashed files');

    // A fresh copy at the same place: its record is found, and the files it maps are not read either.
    rmSync(original, { recursive: true });
    assert.equal(spawnSync('cp', ['-a', copy, original]).status, 0);
    const samePlace = await run(original, 'cat src/*');
    assert.equal(samePlace.stdout, all);
    assert.equal(samePlace.stats.client.hashed, 0, 'a fresh copy at the same path re-hashed files');

    const edited = path.join(copy, 'src/f07.txt');
    const mtimeNs = lstatSync(edited, { bigint: true }).mtimeNs;
    writeFileSync(edited, 'LINE 07\n');
    touchNs([edited], mtimeNs);
    const again = await run(copy, 'cat src/*');
    assert.equal(again.stdout, all.replace('line 07\n', 'LINE 07\n'));
    assert.equal(again.stats.client.hashed, 1, 'exactly the edited file is read again');
  });

  it('asks a handful of questions, not one per file, on a first run that reads 300 small files', async () => {
    const files: Record<string, string> = {};
    for (let i = 0; i < 300; i++) files[`data/d${String(i).padStart(3, '0')}.txt`] = `record ${i}\n`.repeat(1 + (i % 7));
    const root = path.join(tmpDir('repr-rh-many-'), 'proj');
    writeTree(root, files);
    const r = await run(root, 'cat data/*');
    assert.equal(r.stdout, Object.values(files).join(''));
    // The root, data's listing, and perhaps a lookup or two the shell makes; each file was a question before.
    const q = r.stats.runs[0]!.stats.queries;
    assert.ok(q <= 5, `${q} questions`);
  });

  it('lists a symlink, a fifo and a large file beside small ones correctly', async () => {
    const root = path.join(tmpDir('repr-rh-kinds-'), 'proj');
    const big = Buffer.alloc(300 * 1024);
    for (let i = 0; i < big.length; i++) big[i] = (i * 31) % 251;
    mkdirSync(path.join(root, 'd'), { recursive: true });
    writeFileSync(path.join(root, 'd', 'big'), big);
    writeFileSync(path.join(root, 'd', 'small.txt'), 'small\n');
    symlinkSync('small.txt', path.join(root, 'd', 'link'));
    assert.equal(spawnSync('mkfifo', [path.join(root, 'd', 'fifo')]).status, 0);
    const r = await run(root, 'cd d && ls && cat link && readlink link && test ! -e fifo && sha256sum big && cat small.txt');
    const sha = createHash('sha256').update(big).digest('hex');
    // Fifos are not shipped: the command does not see one (reading it would wait on the client forever).
    assert.equal(r.stdout, `big\nlink\nsmall.txt\nsmall\nsmall.txt\n${sha}  big\nsmall\n`);
  });
});
