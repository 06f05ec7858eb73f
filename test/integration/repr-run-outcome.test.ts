import assert from 'node:assert/strict';
import { type ChildProcessWithoutNullStreams, spawn } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fetchStatus, type ServerProcess, spawnWorker, startServerProcess, waitForStatus, type WorkerProcess } from '../../support/servers.js';
import { REPR_BIN, runReprToEnd, waitForLog } from '../../support/spawn-server.js';
import { tmpDir } from '../../support/tmp.js';

/*
 * What `repr run` reports and leaves behind once a command ends: bytes
 * written back, exit codes when interrupted, time queued for an executor,
 * and the permission bits of the files it brings back. Runs go to one
 * worker with one executor (writes=overlay), so that a second run waits
 * behind the first; another worker's runs write through FUSE itself.
 */

interface Started {
  child: ChildProcessWithoutNullStreams;
  stdout(): string;
  stderr(): string;
  exited: Promise<number | null>;
}

/** Starts `repr run ARGS` in `cwd` without waiting for it. */
function startRun(cwd: string, args: string[], env: Record<string, string>): Started {
  const child = spawn(process.execPath, [REPR_BIN, 'run', ...args], { cwd, env: { ...process.env, ...env } });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
  child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  return { child, stdout: () => stdout, stderr: () => stderr, exited };
}

/** Waits until `ok()` holds, polling; fails naming `what` after `timeoutMs`. */
async function until(ok: () => boolean | Promise<boolean>, what: string, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await ok())) {
    if (Date.now() > deadline) throw new Error(`${what}: not within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

interface StatsJson {
  runs: { argv: string[]; writtenBackBytes: number; stats: { queueUs: number; setupUs: number; runUs: number } }[];
}

describe('repr run: what a run reports and leaves behind', () => {
  let scheduler: ServerProcess;
  const workers: WorkerProcess[] = [];
  let proj: string;
  let records: string;

  before(async () => {
    scheduler = await startServerProcess(['--data-dir', tmpDir('repr-outcome-sched-'), '--executors', '0', '--log-level', 'debug']);
    for (const writes of ['overlay', 'fuse']) {
      const args = ['--name', writes, '--executors', '1', '--data-dir', tmpDir('repr-outcome-w-'), '--executor-property', `writes=${writes}`];
      workers.push(await spawnWorker(scheduler.url, [...args, '--run-writes', writes]));
    }
    await waitForStatus(scheduler.url, (s) => s.workers.length === 2);
    proj = path.join(tmpDir('repr-outcome-proj-'), 'proj');
    mkdirSync(proj, { recursive: true });
    writeFileSync(path.join(proj, 'README'), 'a project\n');
    records = tmpDir('repr-outcome-records-');
  });

  after(async () => {
    for (const w of workers) await w.stop('SIGTERM');
    await scheduler?.stop();
  });

  const env = () => ({ REPR_RUN_RECORDS: records });
  const on = (writes: string) => ['--server', scheduler.url, '--platform', `writes=${writes}`];
  const run = (args: string[], writes = 'overlay') => runReprToEnd(['run', ...on(writes), ...args], { cwd: proj, env: env() });
  const start = (args: string[]) => startRun(proj, [...on('overlay'), ...args], env());
  const runningOnWorker = async () => (await fetchStatus(scheduler.url)).workers.find((w) => w.name === 'overlay')?.running.length ?? 0;

  it('counts every byte written back, however many files come back at once', async () => {
    // 200 files of 7 KiB, each different: written back by concurrent lanes.
    const cmd = "mkdir -p many && i=0; while [ $i -lt 200 ]; do printf '%07168d' $i > many/f$i; i=$((i+1)); done";
    const json = path.join(tmpDir('repr-outcome-stats-'), 's.json');
    const r = await run(['--no-record', '--stats', '--stats-json', json, '--', '/bin/sh', '-c', cmd]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(statSync(path.join(proj, 'many', 'f199')).size, 7168);
    const total = 200 * 7168;
    assert.match(r.stderr, new RegExp(`\\b${total} written back`), r.stderr);
    const s = JSON.parse(readFileSync(json, 'utf8')) as StatsJson;
    assert.equal(s.runs[0]!.writtenBackBytes, total);
  });

  for (const writes of ['overlay', 'fuse']) {
    it(`keeps the permission bits the command set, drops setuid with a note, and shows the command the client's modes (writes through ${writes})`, async () => {
      const dir = path.join(proj, `modes-${writes}`);
      mkdirSync(dir);
      for (const f of ['a', 'b', 'c']) writeFileSync(path.join(dir, f), `${f}\n`);
      writeFileSync(path.join(dir, 'private'), 'only mine\n');
      chmodSync(path.join(dir, 'private'), 0o600);
      const cmd = `cd modes-${writes} && chmod 0775 a; chmod 0640 b; chmod 4755 c; echo new > d; chmod 0700 d; stat -c %a private`;
      const r = await run(['--no-record', '--', '/bin/sh', '-c', cmd], writes);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stdout, '600\n', 'the command sees the mode the file has on the client');
      const mode = (f: string) => (statSync(path.join(dir, f)).mode & 0o7777).toString(8);
      assert.deepEqual(['a', 'b', 'c', 'd', 'private'].map(mode), ['775', '640', '755', '700', '600'], 'as a local run would, but for the setuid bit');
      assert.match(r.stderr, /\/c: setuid bit not written back .*; its mode is 0755\n/, r.stderr);
    });
  }

  it('reports time queued for an executor apart from time running', async () => {
    const busy = start(['--no-record', '--', '/bin/sh', '-c', 'echo busy; exec sleep 30']);
    await until(() => busy.stdout().includes('busy'), 'the first run started');
    const json = path.join(tmpDir('repr-outcome-stats-'), 'q.json');
    const queued = start(['--no-record', '--stats', '--stats-json', json, '--', 'true']);
    await waitForLog(scheduler, (rec) => rec.msg === 'run waiting for an executor' && JSON.stringify(rec.argv) === '["true"]');
    // The second run waits behind the first for as long as the first holds the executor.
    const heldMs = 2000;
    await new Promise((r) => setTimeout(r, heldMs));
    busy.child.kill('SIGINT');
    assert.equal(await busy.exited, 130, busy.stderr());
    assert.equal(await queued.exited, 0, queued.stderr());
    const s = (JSON.parse(readFileSync(json, 'utf8')) as StatsJson).runs[0]!.stats;
    assert.ok(s.queueUs >= heldMs * 1000, `queued ${s.queueUs} us`);
    assert.ok(s.runUs < 1_000_000, `ran ${s.runUs} us`);
    assert.match(queued.stderr(), /queued for an executor \d+\.\d ms/, queued.stderr());
  });

  it('exits 130 on SIGINT, says what was written back, and stops the remote command', async () => {
    const dir = tmpDir('repr-outcome-batch-');
    const batch = path.join(dir, 'batch.txt');
    writeFileSync(batch, ['echo done > first.txt', 'echo started; echo partial > second.txt; exec sleep 30', 'echo never > third.txt'].join('\n'));
    const r = start(['--no-record', '--batch', batch, '--workers', '1']);
    await until(() => r.stdout().includes('started'), 'the second command started');
    assert.ok(existsSync(path.join(proj, 'first.txt')), 'the first command finished and was written back');
    assert.equal(await runningOnWorker(), 1);
    r.child.kill('SIGINT');
    assert.equal(await r.exited, 130, r.stderr());
    assert.match(
      r.stderr(),
      /repr run: interrupted \(SIGINT\): 1 of 3 commands finished and were written back; 1 stopped and 1 not started, nothing of theirs written back/,
    );
    assert.equal(existsSync(path.join(proj, 'second.txt')), false);
    assert.equal(existsSync(path.join(proj, 'third.txt')), false);
    await until(async () => (await runningOnWorker()) === 0, 'the executor is idle again');
  });

  it('exits 143 on SIGTERM and writes nothing of the stopped command back', async () => {
    const r = start(['--no-record', '--', '/bin/sh', '-c', 'echo partial > partial.txt; echo started; exec sleep 30']);
    await until(() => r.stdout().includes('started'), 'the command started');
    r.child.kill('SIGTERM');
    assert.equal(await r.exited, 143, r.stderr());
    assert.match(r.stderr(), /repr run: interrupted \(SIGTERM\): the command was stopped; nothing was written back/);
    assert.equal(existsSync(path.join(proj, 'partial.txt')), false);
    await until(async () => (await runningOnWorker()) === 0, 'the executor is idle again');
    // The executor takes runs again.
    const again = await run(['--no-record', '--', 'cat', 'README']);
    assert.equal(again.code, 0, again.stderr);
    assert.equal(again.stdout, 'a project\n');
  });
});
