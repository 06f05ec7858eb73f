import assert from 'node:assert/strict';
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { cpSync, existsSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { DaemonStatus } from '../../src/client/daemon-protocol.js';
import { type CProject, writeCProject } from '../../support/c-project.js';
import { fetchStatus, type ServerProcess, spawnWorker, startServerProcess, waitForStatus, type WorkerProcess } from '../../support/servers.js';
import { REPR_BIN, runReprToEnd } from '../../support/spawn-server.js';
import { tmpDir } from '../../support/tmp.js';

interface Ran {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs a program to its end in `cwd` with `env` added; `detached` gives it its own process group, as a shell's job has. */
function start(cmd: string, args: string[], cwd: string, env: Record<string, string>): { child: ChildProcess; done: Promise<Ran> } {
  const child = spawn(cmd, args, { cwd, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (c: Buffer) => (stdout += c.toString()));
  child.stderr!.on('data', (c: Buffer) => (stderr += c.toString()));
  const done = new Promise<Ran>((resolve) => child.once('close', (code) => resolve({ code, stdout, stderr })));
  return { child, done };
}

/** Every regular file under dir: relative path → content, base64. */
function files(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  const walk = (d: string) => {
    for (const name of readdirSync(d).sort()) {
      const p = path.join(d, name);
      if (statSync(p).isDirectory()) walk(p);
      else out[path.relative(dir, p)] = readFileSync(p).toString('base64');
    }
  };
  walk(dir);
  return out;
}

async function until(what: string, cond: () => boolean | Promise<boolean>, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting until ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

describe('repr daemon, repr exec and repr cc: one make fanned out over three workers', () => {
  let scheduler: ServerProcess;
  const workers: WorkerProcess[] = [];
  let project: CProject;
  let proj: string;
  let ref: string;
  let env: Record<string, string>;
  const cc = `${process.execPath} ${REPR_BIN} cc gcc`;

  before(async () => {
    scheduler = await startServerProcess(['--data-dir', tmpDir('repr-fan-sched-'), '--executors', '0']);
    for (let i = 0; i < 3; i++)
      workers.push(await spawnWorker(scheduler.url, ['--name', `fw${i}`, '--executors', '1', '--data-dir', tmpDir(`repr-fan-w${i}-`)]));
    await waitForStatus(scheduler.url, (s) => s.workers.length === 3);
    const base = tmpDir('repr-fan-proj-');
    proj = path.join(base, 'proj');
    ref = path.join(base, 'ref');
    project = writeCProject(proj);
    cpSync(proj, ref, { recursive: true });
    const local = spawnSync('make', ['-j4'], { cwd: ref, encoding: 'utf8' });
    assert.equal(local.status, 0, local.stderr);
    env = { REPR_SERVER: scheduler.url, XDG_RUNTIME_DIR: tmpDir('repr-fan-xdg-') };
  });

  after(async () => {
    if (env) await runReprToEnd(['daemon', 'stop'], { env });
    for (const w of workers) await w.stop('SIGTERM');
    await scheduler?.stop();
  });

  const daemonStatus = async (): Promise<DaemonStatus> => {
    const r = await runReprToEnd(['daemon', 'status', '--json'], { env });
    assert.equal(r.code, 0, r.stderr);
    return JSON.parse(r.stdout) as DaemonStatus;
  };
  const completed = async () => new Map((await fetchStatus(scheduler.url)).workers.map((w) => [w.name, Number(w.completed)]));

  it('repr exec starts the daemon on demand and runs one command: output streamed, exit code passed, changes written back', async () => {
    const r = await runReprToEnd(['exec', '--', '/bin/sh', '-c', 'echo to-out; echo to-err >&2; cat include/config.h > copied.h; exit 3'], { cwd: proj, env });
    assert.equal(r.code, 3, r.stderr);
    assert.equal(r.stdout, 'to-out\n');
    assert.equal(r.stderr, 'to-err\n');
    assert.equal(readFileSync(path.join(proj, 'copied.h'), 'utf8'), readFileSync(path.join(proj, 'include/config.h'), 'utf8'));
    rmSync(path.join(proj, 'copied.h'));
    const dir = path.join(env.XDG_RUNTIME_DIR!, 'repr');
    assert.equal(statSync(dir).mode & 0o777, 0o700, 'only this user can reach the socket');
    const socket = readdirSync(dir).find((n) => n.endsWith('.sock'))!;
    assert.equal(statSync(path.join(dir, socket)).mode & 0o777, 0o600);
    const s = await daemonStatus();
    assert.equal(s.runs, 1);
    const again = await runReprToEnd(['exec', '--', 'true'], { cwd: proj, env });
    assert.equal(again.code, 0, again.stderr);
    assert.equal((await daemonStatus()).pid, s.pid, 'the second command went through the same daemon');
  });

  it('make -j4 CC="repr cc gcc": compiles spread over all three workers, each input uploaded once, objects and program identical to a local build', async () => {
    const before = await completed();
    const s0 = await daemonStatus();
    const r = await start('make', ['-j4', `CC=${cc}`], proj, env).done;
    assert.equal(r.code, 0, r.stderr);
    for (const f of [...project.objects, project.program]) assert.deepEqual(readFileSync(path.join(proj, f)), readFileSync(path.join(ref, f)), `${f} differs`);
    for (const o of project.objects) {
      const d = o.replace(/\.o$/, '.d');
      assert.equal(readFileSync(path.join(proj, d), 'utf8'), readFileSync(path.join(ref, d), 'utf8'), `${d} differs`);
    }
    assert.equal(spawnSync(path.join(proj, project.program), { encoding: 'utf8' }).stdout, project.expectedOutput);
    const s1 = await daemonStatus();
    assert.equal(s1.runs - s0.runs, project.sources.length, 'one remote run per compile; the link ran here');
    const after = await completed();
    for (const w of ['fw0', 'fw1', 'fw2']) {
      const n = (after.get(w) ?? 0) - (before.get(w) ?? 0);
      assert.ok(n >= 3, `worker ${w} compiled ${n} of ${project.sources.length}`);
    }
    // Each file at most once: the uploads are no more than the distinct
    // contents of the tree (sources, headers, Makefile), and at least every source.
    const inputs = new Set(
      Object.entries(files(ref))
        .filter(([p]) => !p.startsWith('build/'))
        .map(([, content]) => content),
    );
    const uploaded = s1.uploadedBlobs - s0.uploadedBlobs;
    assert.ok(uploaded >= project.sources.length && uploaded <= inputs.size, `${uploaded} blobs uploaded for ${inputs.size} distinct input files`);
  });

  it('a rerun in an unchanged tree (after make clean) asks the client nothing for any compile and uploads nothing', async () => {
    assert.equal(spawnSync('make', ['clean'], { cwd: proj }).status, 0);
    const s0 = await daemonStatus();
    const r = await start('make', ['-j4', `CC=${cc}`], proj, env).done;
    assert.equal(r.code, 0, r.stderr);
    const s1 = await daemonStatus();
    assert.equal(s1.runs - s0.runs, project.sources.length);
    assert.equal(s1.queries - s0.queries, 0, 'no question about any file');
    assert.ok(s1.mappedHits > s0.mappedHits);
    assert.equal(s1.uploadedBlobs - s0.uploadedBlobs, 0);
    for (const f of [...project.objects, project.program]) assert.deepEqual(readFileSync(path.join(proj, f)), readFileSync(path.join(ref, f)), `${f} differs`);
  });

  it("a failing compile's error text and exit code reach make", async () => {
    const src = path.join(proj, project.sources[0]!);
    const text = readFileSync(src, 'utf8');
    writeFileSync(src, `${text}\n#error broken on purpose\n`);
    try {
      const r = await start('make', ['-j4', `CC=${cc}`], proj, env).done;
      assert.equal(r.code, 2, 'make failed');
      assert.match(r.stderr, /part000\.c:\d+:\d+: error: #error broken on purpose/);
      assert.match(r.stderr, /\[Makefile:\d+: build\/core\/part000\.o\] Error 1/, "gcc's exit code 1 reached make");
    } finally {
      writeFileSync(src, text);
    }
  });

  it('repr exec interrupted exits as a shell would for its signal: 130 for SIGINT, 143 for SIGTERM, and the remote command stops', async () => {
    for (const [signal, code] of [
      ['SIGINT', 130],
      ['SIGTERM', 143],
    ] as const) {
      const marker = `37${process.pid % 1000}${code}`;
      const sleeping = () => (spawnSync('pgrep', ['-f', `sleep ${marker}`], { encoding: 'utf8' }).stdout.match(/\d+/g) ?? []).length;
      // Through sh, so that the wrapper's own command line does not read "sleep MARKER" to pgrep.
      const run = start(process.execPath, [REPR_BIN, 'exec', '--', '/bin/sh', '-c', 'exec sleep "$0"', marker], proj, env);
      try {
        await until(`the command runs remotely (${signal})`, () => sleeping() >= 1, 60_000);
        run.child.kill(signal);
        const r = await run.done;
        assert.equal(r.code, code, `${signal}: ${r.stderr}`);
        await until(`the remote command stopped (${signal})`, () => sleeping() === 0, 20_000);
      } finally {
        run.child.kill('SIGKILL');
      }
    }
  });

  it('Ctrl-C of make stops every remote compile and writes nothing back', async () => {
    assert.equal(spawnSync('make', ['clean'], { cwd: proj }).status, 0);
    const marker = `36${process.pid % 1000}`;
    // A compiler slow enough to be interrupted mid-flight on every worker.
    writeFileSync(path.join(proj, 'slowcc.sh'), `echo compiling >&2\nexec sleep ${marker}\n`);
    const before = files(proj);
    const sleeping = () => (spawnSync('pgrep', ['-f', `sleep ${marker}`], { encoding: 'utf8' }).stdout.match(/\d+/g) ?? []).length;
    const make = start('make', ['-j4', `CC=${process.execPath} ${REPR_BIN} cc /bin/sh slowcc.sh`], proj, env);
    try {
      await until('a compile runs on each worker', () => sleeping() >= 3, 60_000);
      process.kill(-make.child.pid!, 'SIGINT');
      const r = await make.done;
      assert.notEqual(r.code, 0);
      await until('no remote compile is left', () => sleeping() === 0, 20_000);
      await until('the daemon has no run in flight', async () => (await daemonStatus()).running === 0, 20_000);
      const now = files(proj);
      assert.deepEqual(Object.keys(now).sort(), Object.keys(before).sort(), 'no object or dependency file appeared');
      assert.deepEqual(now, before);
      assert.equal(existsSync(path.join(proj, project.objects[0]!)), false);
    } finally {
      try {
        process.kill(-make.child.pid!, 'SIGKILL');
      } catch {
        /* already gone */
      }
      rmSync(path.join(proj, 'slowcc.sh'), { force: true });
    }
  });
});
