import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { REPR_BIN } from '../../support/spawn-server.js';
import { fetchStatus, type ServerProcess, spawnWorker, startServerProcess, waitForStatus, type WorkerProcess } from '../../support/servers.js';
import { tmpDir } from '../../support/tmp.js';

interface Ran {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs the real `repr run` CLI in `cwd`. */
function reprRun(cwd: string, args: string[], env: Record<string, string> = {}, timeoutMs = 60_000): Promise<Ran> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [REPR_BIN, 'run', ...args], { cwd, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    const t = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`repr run ${args.join(' ')} timed out; stderr: ${stderr}`));
    }, timeoutMs);
    child.on('exit', (code) => {
      clearTimeout(t);
      resolve({ code, stdout, stderr });
    });
  });
}

/** Runs a command locally, in a copy of the project, for the reference result. */
function local(cwd: string, cmd: string): Ran {
  const r = spawnSync('/bin/sh', ['-c', cmd], { cwd, encoding: 'utf8' });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** Every file under dir: relative path → content (base64) and mode bits that matter. */
function snapshot(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  const walk = (d: string) => {
    for (const name of readdirSync(d).sort()) {
      const p = path.join(d, name);
      const st = statSync(p);
      const rel = path.relative(dir, p);
      if (st.isDirectory()) {
        out[`${rel}/`] = 'dir';
        walk(p);
      } else {
        out[rel] = `${st.mode & 0o111 ? 'x' : '-'} ${readFileSync(p).toString('base64')}`;
      }
    }
  };
  walk(dir);
  return out;
}

/** A small C project: headers found through -I, a Makefile, a tree to grep. */
function makeProject(dir: string): void {
  mkdirSync(path.join(dir, 'src'), { recursive: true });
  mkdirSync(path.join(dir, 'include', 'sub'), { recursive: true });
  writeFileSync(path.join(dir, 'include', 'config.h'), '#define GREETING "hello from repr"\n#define FACTOR 7\n');
  writeFileSync(path.join(dir, 'include', 'util.h'), '#include "config.h"\n#include "sub/extra.h"\nint scale(int x);\n');
  writeFileSync(path.join(dir, 'include', 'sub', 'extra.h'), 'int extra(void);\n');
  writeFileSync(
    path.join(dir, 'src', 'main.c'),
    '#include <stdio.h>\n#include "util.h"\nint main(void) { printf("%s %d\\n", GREETING, scale(6) + extra()); return 0; }\n',
  );
  writeFileSync(path.join(dir, 'src', 'util.c'), '#include "util.h"\nint scale(int x) { return x * FACTOR; }\n');
  writeFileSync(path.join(dir, 'src', 'extra.c'), '#include "util.h"\nint extra(void) { return FACTOR - 7; }\n');
  writeFileSync(
    path.join(dir, 'Makefile'),
    [
      'CFLAGS = -O2 -Iinclude',
      'OBJS = build/main.o build/util.o build/extra.o',
      'build/app: $(OBJS)',
      '\t$(CC) -o $@ $(OBJS)',
      'build/%.o: src/%.c include/util.h include/config.h | build',
      '\t$(CC) $(CFLAGS) -c $< -o $@',
      'build:',
      '\tmkdir -p build',
      '',
    ].join('\n'),
  );
  mkdirSync(path.join(dir, 'docs', 'deep', 'er'), { recursive: true });
  for (let i = 0; i < 20; i++)
    writeFileSync(path.join(dir, 'docs', i % 2 ? 'deep' : 'deep/er', `note${i}.txt`), `note ${i}\n${i % 3 === 0 ? 'needle here\n' : 'hay\n'}`);
  writeFileSync(path.join(dir, 'old.txt'), 'to be removed\n');
  writeFileSync(path.join(dir, 'edit.txt'), 'first line\n');
}

const sortedLines = (s: string) => s.split('\n').filter(Boolean).sort().join('\n');

/** Mounts (the FUSE tree, the overlay over it) still present under `dir`. */
function mountsUnder(dir: string): string[] {
  return readFileSync('/proc/mounts', 'utf8')
    .split('\n')
    .filter((l) => l.split(' ')[1]?.startsWith(dir));
}

/**
 * Run directories under `dir` that hold a mount. Between runs a machine has
 * one: the directory made ahead for its next run.
 */
function mountedRunDirs(dir: string): string[] {
  return [...new Set(mountsUnder(dir).map((l) => path.dirname(l.split(' ')[1]!)))];
}

describe('repr run (FUSE-virtualized remote commands)', () => {
  let scheduler: ServerProcess;
  const workers: WorkerProcess[] = [];
  const workerDirs: string[] = [];
  let proj: string;
  let ref: string;
  let records: string;

  before(async () => {
    scheduler = await startServerProcess(['--data-dir', tmpDir('repr-run-sched-'), '--executors', '0']);
    for (let i = 0; i < 3; i++) {
      const d = tmpDir(`repr-run-w${i}-`);
      workerDirs.push(d);
      workers.push(await spawnWorker(scheduler.url, ['--name', `rw${i}`, '--executors', '1', '--data-dir', d, '--executor-property', 'pool=main']));
    }
    // One worker whose runs write through FUSE itself (the fallback where overlayfs cannot be mounted).
    const d = tmpDir('repr-run-wfuse-');
    workerDirs.push(d);
    workers.push(
      await spawnWorker(scheduler.url, ['--name', 'rwfuse', '--executors', '1', '--data-dir', d, '--run-writes', 'fuse', '--executor-property', 'writes=fuse']),
    );
    await waitForStatus(scheduler.url, (s) => s.workers.length === 4);
    const base = tmpDir('repr-run-proj-');
    proj = path.join(base, 'proj');
    ref = path.join(base, 'ref');
    makeProject(proj);
    cpSync(proj, ref, { recursive: true });
    records = tmpDir('repr-run-records-');
  });

  after(async () => {
    for (const w of workers) await w.stop('SIGTERM');
    await scheduler?.stop();
  });

  const run = (args: string[], env: Record<string, string> = {}) => reprRun(proj, ['--server', scheduler.url, ...args], { REPR_RUN_RECORDS: records, ...env });
  const statsOf = (file: string) =>
    JSON.parse(readFileSync(file, 'utf8')) as {
      client: { uploadedBlobs: number; uploadedBytes: number; answered: number };
      runs: { exitCode: number; status: number; stats: { queries: number; mappedHits: number; bytesFetched: number } }[];
    };

  it('compiles with gcc -c, headers discovered on demand; the object file matches a local build byte for byte', async () => {
    const cmd = 'mkdir -p objs && gcc -O2 -Iinclude -c src/util.c -o objs/util.o';
    const r = await run(['--', '/bin/sh', '-c', cmd]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(local(ref, cmd).code, 0);
    assert.deepEqual(readFileSync(path.join(proj, 'objs/util.o')), readFileSync(path.join(ref, 'objs/util.o')));
  });

  it('runs make -j and brings the build tree back identical to a local make', async () => {
    const r = await run(['--', 'make', '-j4']);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(local(ref, 'make -j4').code, 0);
    for (const f of ['build/main.o', 'build/util.o', 'build/extra.o', 'build/app']) {
      assert.deepEqual(readFileSync(path.join(proj, f)), readFileSync(path.join(ref, f)), `${f} differs`);
    }
    assert.ok(statSync(path.join(proj, 'build/app')).mode & 0o100, 'the linked program is executable');
    assert.equal(spawnSync(path.join(proj, 'build/app'), { encoding: 'utf8' }).stdout, 'hello from repr 42\n');
  });

  it('greps a tree recursively with the same matches as locally', async () => {
    const r = await run(['--', 'grep', '-rn', 'needle', 'docs']);
    const l = local(ref, 'grep -rn needle docs');
    assert.equal(r.code, 0, r.stderr);
    assert.equal(sortedLines(r.stdout), sortedLines(l.stdout));
    assert.equal(sortedLines(r.stdout).split('\n').length, 7);
  });

  for (const writes of ['overlay', 'fuse']) {
    it(`brings back what a script creates, changes, renames, chmods and removes, as a local run would (writes through ${writes})`, async () => {
      const script = [
        'set -e',
        `mkdir -p gen-${writes}/a/b && echo generated > gen-${writes}/a/b/out.txt`,
        `echo appended >> edit.txt`,
        `rm -f old.txt`,
        `printf "#!/bin/sh\\necho tool\\n" > gen-${writes}/tool.sh && chmod +x gen-${writes}/tool.sh`,
        `cp src/util.c gen-${writes}/util-copy.c && mv gen-${writes}/util-copy.c gen-${writes}/moved.c`,
        `seq 1 100000 > gen-${writes}/big.txt`,
        `mkdir gen-${writes}/empty`,
        // A directory of the client removed and made again: its old entries must go.
        `rm -rf docs/deep/er && mkdir docs/deep/er && echo fresh > docs/deep/er/new-${writes}.txt`,
        // A file replaced by a directory, and a directory by a file.
        `mkdir -p kinds && rm -rf kinds/* && echo f > kinds/was-file && mkdir kinds/was-dir`,
        `chmod +x src/extra.c && chmod -x src/extra.c && chmod +x src/main.c`,
      ].join('\n');
      const swap = 'rm kinds/was-file && mkdir kinds/was-file && echo in > kinds/was-file/x && rm -r kinds/was-dir && echo now-a-file > kinds/was-dir';
      for (const cmd of [script, swap]) {
        const r = await run(['--no-record', '--platform', writes === 'fuse' ? 'writes=fuse' : 'pool=main', '--', '/bin/sh', '-c', cmd]);
        assert.equal(r.code, 0, r.stderr);
        assert.equal(local(ref, cmd).code, 0);
        assert.deepEqual(snapshot(proj), snapshot(ref));
      }
      assert.equal(existsSync(path.join(proj, 'old.txt')), false);
      assert.equal(readFileSync(path.join(proj, 'kinds/was-dir'), 'utf8'), 'now-a-file\n');
    });
  }

  it('passes the exit code and stderr through, and a file missing on the client is ENOENT', async () => {
    const r = await run(['--', '/bin/sh', '-c', 'echo to-stdout; echo to-stderr >&2; exit 7']);
    assert.equal(r.code, 7);
    assert.equal(r.stdout, 'to-stdout\n');
    assert.match(r.stderr, /to-stderr/);
    const m = await run(['--', '/bin/sh', '-c', 'cat does/not/exist.h; r=$?; test -e nothing-here || echo absent; exit $r']);
    assert.equal(m.code, 1);
    assert.match(m.stderr, /does\/not\/exist\.h: No such file or directory/);
    assert.equal(m.stdout, 'absent\n');
  });

  it('refuses a working directory outside its roots with a clear error', async () => {
    const r = await run(['--root', path.join(proj, 'src'), '--', 'true']);
    assert.equal(r.code, 125, "repr could not run it: 1 and 2 are the command's (README, Exit codes)");
    assert.match(r.stderr, /not inside a root/);
  });

  it('makes no on-demand request on a second identical run in an unchanged tree', async () => {
    const stats = path.join(tmpDir('repr-run-stats-'), 's.json');
    const cmd = ['/bin/sh', '-c', 'gcc -O2 -Iinclude -c src/main.c -o main.o && ls include'];
    const first = await run(['--stats-json', stats, '--platform', 'pool=main', '--', ...cmd]);
    assert.equal(first.code, 0, first.stderr);
    const s1 = statsOf(stats).runs[0]!;
    assert.ok(s1.stats.queries > 0, 'the first run asked for files');
    // On another worker, whose cache lacks these files: they come by prefetch, still with no question.
    const second = await run(['--stats-json', stats, '--platform', 'writes=fuse', '--', ...cmd]);
    assert.equal(second.code, 0, second.stderr);
    const s2 = statsOf(stats).runs[0]!;
    assert.equal(s2.stats.queries, 0, 'the second run asked for nothing');
    assert.ok(s2.stats.bytesFetched > 0, 'the mapped files were fetched from the CAS by the other worker');
    assert.ok(s2.stats.mappedHits > 0);
    assert.equal(second.stdout, first.stdout);
    // A change to a header it read is picked up (the mapping carries the new digest).
    writeFileSync(path.join(proj, 'include', 'config.h'), '#define GREETING "changed"\n#define FACTOR 7\n');
    const third = await run(['--stats-json', stats, '--', '/bin/sh', '-c', 'grep -c changed include/config.h']);
    assert.equal(third.stdout, '1\n');
  });

  it('serves the paths of a --manifest from mappings, with no questions', async () => {
    const stats = path.join(tmpDir('repr-run-stats-'), 's.json');
    const manifest = path.join(path.dirname(proj), 'manifest.txt');
    writeFileSync(manifest, 'include\ninclude/config.h\ninclude/sub\ninclude/sub/extra.h\n');
    const r = await run(['--no-record', '--manifest', manifest, '--stats-json', stats, '--', 'cat', 'include/config.h', 'include/sub/extra.h']);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, `${readFileSync(path.join(proj, 'include/config.h'), 'utf8')}int extra(void);\n`);
    const s = statsOf(stats).runs[0]!.stats;
    assert.equal(s.queries, 0);
    assert.ok(s.mappedHits >= 4, `mapped hits ${s.mappedHits}`);
  });

  it('fans a batch out to 3 workers and uploads each input once', async () => {
    const dir = path.join(path.dirname(proj), 'fan');
    mkdirSync(dir);
    for (let i = 0; i < 12; i++) writeFileSync(path.join(dir, `in${i}.txt`), `input ${i} ${'x'.repeat(i * 100)}\n`);
    const batch = path.join(dir, 'batch.txt');
    const cmds = [0, 1, 2].map((k) => `sleep 1; cat in*.txt | wc -c > out${k}.txt`);
    writeFileSync(batch, cmds.join('\n'));
    const before = await fetchStatus(scheduler.url);
    const done = (s: typeof before) => new Map(s.workers.map((w) => [w.name, Number(w.completed)]));
    const stats = path.join(dir, 's.json');
    const r = await reprRun(
      dir,
      ['--server', scheduler.url, '--batch', batch, '--workers', '3', '--platform', 'pool=main', '--no-record', '--stats-json', stats],
      { REPR_RUN_RECORDS: records },
    );
    assert.equal(r.code, 0, r.stderr);
    const expected = local(dir, 'cat in*.txt | wc -c').stdout;
    for (const k of [0, 1, 2]) assert.equal(readFileSync(path.join(dir, `out${k}.txt`), 'utf8'), expected);
    const s = statsOf(stats);
    // Each file of the directory uploaded once, though three workers read
    // them all: the 12 inputs, and batch.txt, which the client uploads ahead
    // of questions as a small sibling of files asked for.
    assert.equal(s.client.uploadedBlobs, 13, JSON.stringify(s.client));
    assert.equal(s.client.uploadedBytes, 6710 + statSync(batch).size, 'bytes of the 13 files');
    const afterDone = done(await fetchStatus(scheduler.url));
    const beforeDone = done(before);
    for (const w of ['rw0', 'rw1', 'rw2']) assert.equal((afterDone.get(w) ?? 0) - (beforeDone.get(w) ?? 0), 1, `worker ${w} ran one command`);
  });

  it('stops the remote command and cleans the mount when the client is killed; the worker stays healthy', async () => {
    const marker = `${Date.now() % 1000}.${process.pid % 1000}`;
    const child = spawn(
      process.execPath,
      [REPR_BIN, 'run', '--server', scheduler.url, '--no-record', '--', '/bin/sh', '-c', `echo started; exec sleep 9${marker}`],
      {
        cwd: proj,
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    await new Promise<void>((resolve, reject) => {
      const t = setTimeout(() => reject(new Error('the command never started')), 30_000);
      child.stdout.on('data', (c: Buffer) => {
        if (c.toString().includes('started')) {
          clearTimeout(t);
          resolve();
        }
      });
    });
    const sleeping = () => spawnSync('pgrep', ['-f', `sleep 9${marker}`]).status === 0;
    assert.ok(sleeping(), 'the remote command runs');
    assert.ok(
      workerDirs.some((d) => mountsUnder(d).length > 0),
      'a run mount exists while it runs',
    );
    const runDirs = (d: string) => {
      const work = path.join(d, 'work');
      return existsSync(work) ? readdirSync(work).filter((n) => n.startsWith('run-')) : [];
    };
    child.kill('SIGKILL');
    // Cleanup is asynchronous on the worker: wait for all of it, then check each part.
    const deadline = Date.now() + 15_000;
    // Each machine keeps one run directory, made ahead for its next run.
    const leftBehind = () => workerDirs.some((d) => mountedRunDirs(d).length > 1 || runDirs(d).length > 1);
    while ((sleeping() || leftBehind()) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
    assert.equal(sleeping(), false, 'the remote process was stopped');
    for (const d of workerDirs) assert.ok(mountedRunDirs(d).length <= 1, `no mount left under ${d}: ${mountsUnder(d).join('; ')}`);
    for (const d of workerDirs) assert.ok(runDirs(d).length <= 1, `run directories removed: ${runDirs(d).join(', ')}`);
    // Healthy: all three workers are registered and take runs again.
    const s = await fetchStatus(scheduler.url);
    assert.equal(s.workers.length, 4);
    const again = await run(['--no-record', '--', '/bin/sh', '-c', 'cat include/sub/extra.h']);
    assert.equal(again.code, 0, again.stderr);
    assert.equal(again.stdout, 'int extra(void);\n');
  });

  it('fails a run whose worker drains past its timeout with a clear error, and leaves nothing mounted', async () => {
    const dir = tmpDir('repr-run-wdrain-');
    const w = await spawnWorker(scheduler.url, [
      '--name',
      'rdrain',
      '--executors',
      '1',
      '--data-dir',
      dir,
      '--executor-property',
      'pool=drain',
      '--drain-timeout',
      '0.5',
    ]);
    const child = spawn(
      process.execPath,
      [REPR_BIN, 'run', '--server', scheduler.url, '--no-record', '--platform', 'pool=drain', '--', '/bin/sh', '-c', 'echo started; exec sleep 30'],
      {
        cwd: proj,
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    let stderr = '';
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    const exited = new Promise<number | null>((resolve) => child.on('exit', resolve));
    await new Promise<void>((resolve) => child.stdout.on('data', (c: Buffer) => c.toString().includes('started') && resolve()));
    assert.equal(await w.stop('SIGTERM'), 0, 'the worker drains and exits cleanly');
    assert.equal(await exited, 125);
    assert.match(stderr, /UNAVAILABLE: .*rdrain.*nothing was written back/);
    assert.deepEqual(mountsUnder(dir), []);
  });

  it('leaves no mount behind when a worker is killed while a run directory waits made ahead, and starts again on its directory', async () => {
    const dir = tmpDir('repr-run-wkill-');
    const args = ['--name', 'rkill', '--executors', '1', '--data-dir', dir, '--executor-property', 'pool=kill'];
    const w = await spawnWorker(scheduler.url, args);
    const r = await run(['--no-record', '--platform', 'pool=kill', '--', '/bin/true']);
    assert.equal(r.code, 0, r.stderr);
    const deadline = Date.now() + 15_000;
    // Made ahead: its FUSE mount and the overlay over it.
    while (mountsUnder(dir).length < 2 && Date.now() < deadline) await new Promise((res) => setTimeout(res, 50));
    assert.equal(mountedRunDirs(dir).length, 1, 'a run directory was made ahead');
    assert.equal(mountsUnder(dir).length, 2);
    await w.stop('SIGKILL');
    // Its helper sees the worker gone and removes the overlay over its mount, then the mount.
    while (mountsUnder(dir).length > 0 && Date.now() < deadline) await new Promise((res) => setTimeout(res, 50));
    assert.deepEqual(mountsUnder(dir), []);
    const again = await spawnWorker(scheduler.url, args);
    try {
      const r2 = await run(['--no-record', '--platform', 'pool=kill', '--', '/bin/true']);
      assert.equal(r2.code, 0, r2.stderr);
    } finally {
      assert.equal(await again.stop('SIGTERM'), 0);
    }
    assert.deepEqual(mountsUnder(dir), [], 'a worker that stops removes the directory it made ahead');
  });
});
