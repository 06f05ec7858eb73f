import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { GetStatusResponse } from '../../src/proto/repr/worker/v1/worker.js';
import { fetchStatus, type ServerProcess, spawnWorker, startServerProcess, waitForStatus, type WorkerProcess } from '../../support/servers.js';
import { REPR_BIN, runReprToEnd } from '../../support/spawn-server.js';
import { tmpDir } from '../../support/tmp.js';

const T = {
  build: 'build-token-0123456789abcdef',
  other: 'other-token-0123456789abcdef',
  worker: 'worker-token-0123456789abcd',
  admin: 'admin-token-0123456789abcde',
};

const WORKERS = ['spread1', 'spread2', 'spread3'];

/**
 * Many short `repr run`s of one build on a real scheduler with three real
 * workers of two executors each: they spread over every worker instead of
 * filling the first one registered, and another user's run does not wait
 * for the whole burst.
 */
describe('repr run spread over a farm', () => {
  let server: ServerProcess;
  const workers: WorkerProcess[] = [];
  let proj: string;
  const status = () => fetchStatus(server.url, 10_000, { token: T.admin });
  const completed = (s: GetStatusResponse) => new Map(s.workers.map((w) => [w.name, Number(w.completed)]));
  const run = (token: string, args: string[]) =>
    runReprToEnd(['run', '--server', server.url, '--token', token, '--no-record', ...args], {
      cwd: proj,
      env: { REPR_TOKEN: '', REPR_RUN_RECORDS: tmpDir('repr-spread-rec-') },
      timeoutMs: 120_000,
    });
  const batch = (name: string, lines: number, cmd: string) => {
    const file = path.join(proj, name);
    writeFileSync(file, `${Array.from({ length: lines }, () => cmd).join('\n')}\n`);
    return file;
  };

  before(async () => {
    const dir = tmpDir('repr-spread-');
    const tokens = path.join(dir, 'tokens');
    writeFileSync(tokens, `build:${T.build} developer\nother:${T.other} developer\nworker:${T.worker} worker\nadmin:${T.admin} admin\n`);
    const config = path.join(dir, 'server.json');
    writeFileSync(config, JSON.stringify({ execution: { executors: 0 }, auth: { tokensFile: tokens } }));
    server = await startServerProcess(['--config', config, '--data-dir', path.join(dir, 'data')]);
    for (const name of WORKERS)
      workers.push(await spawnWorker(server.url, ['--name', name, '--token', T.worker, '--executors', '2', '--data-dir', tmpDir(`repr-${name}-`)]));
    await waitForStatus(server.url, (s) => s.workers.length === 3, 20_000, undefined, { token: T.admin });
    proj = tmpDir('repr-spread-proj-');
    writeFileSync(path.join(proj, 'input.txt'), 'seen by every run\n');
  });

  after(async () => {
    for (const w of workers) await w.stop('SIGKILL');
    await server?.stop();
  });

  it('keeps three concurrent runs on three workers, one each, for all 30 of them', async () => {
    const before = completed(await status());
    const running = run(T.build, ['--batch', batch('three.txt', 30, "sh -c 'cat input.txt >/dev/null; sleep 0.3'"), '--workers', '3']);
    let done = false;
    void running.finally(() => (done = true));
    // Whatever moment it is sampled at, no worker holds two of the three runs.
    let samples = 0;
    const most = new Map<string, number>();
    while (!done) {
      for (const w of (await status()).workers) {
        const held = w.running.filter((r) => r.operationName.startsWith('runs/')).length;
        most.set(w.name, Math.max(most.get(w.name) ?? 0, held));
      }
      samples++;
      await new Promise((r) => setTimeout(r, 150));
    }
    const r = await running;
    assert.equal(r.code, 0, r.stderr);
    assert.ok(samples > 5, `sampled the farm ${samples} times`);
    for (const name of WORKERS) assert.ok((most.get(name) ?? 0) <= 1, `${name} held ${most.get(name)} runs at once: ${JSON.stringify([...most])}`);
    const after = completed(await status());
    const per = WORKERS.map((n) => after.get(n)! - before.get(n)!);
    assert.equal(
      per.reduce((a, b) => a + b),
      30,
    );
    for (const [i, n] of per.entries()) assert.ok(n >= 5, `${WORKERS[i]} ran ${n} of 30: ${per.join('/')}`);
  });

  it("lands a burst of 30 concurrent runs on all three workers, and another user's run gets an executor before the burst is done", async () => {
    const before = completed(await status());
    // 30 runs of 2 s each on 6 executors: five waves, 24 runs waiting after the
    // first; long enough that the other user's client starts within a wave or two
    // on a loaded machine.
    const burst = run(T.build, ['--batch', batch('burst.txt', 30, "sh -c 'sleep 2'"), '--workers', '30']);
    await waitForStatus(server.url, (s) => s.workers.every((w) => w.running.length === 2), 60_000, undefined, { token: T.admin });
    // The other user's command prints at once and then holds its executor a
    // while: its first output shows it started, and the farm is counted then.
    const other = spawn(
      process.execPath,
      [REPR_BIN, 'run', '--server', server.url, '--token', T.other, '--no-record', '--', 'sh', '-c', 'cat input.txt; sleep 1'],
      {
        cwd: proj,
        env: { ...process.env, REPR_TOKEN: '', REPR_RUN_RECORDS: tmpDir('repr-spread-rec-') },
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    let out = '';
    let err = '';
    other.stderr.on('data', (d: Buffer) => (err += d.toString()));
    const exited = new Promise<number | null>((resolve) => other.once('close', resolve));
    await new Promise<void>((resolve, reject) => {
      other.stdout.on('data', (d: Buffer) => {
        out += d.toString();
        resolve();
      });
      void exited.then(() => reject(new Error(`the other run printed nothing: ${err}`)));
    });
    const atStart = completed(await status());
    const buildDone = WORKERS.reduce((sum, n) => sum + atStart.get(n)! - before.get(n)!, 0);
    // Five executors held the build's runs while the other run held the sixth, so
    // fewer than 24 finished means some of the burst still waited when it started.
    assert.ok(buildDone < 24, `the other user's run waited for ${buildDone} of the build's 30 runs`);
    assert.equal(await exited, 0, err);
    assert.equal(out, 'seen by every run\n');
    const b = await burst;
    assert.equal(b.code, 0, b.stderr);
    const end = completed(await status());
    const per = WORKERS.map((n) => end.get(n)! - before.get(n)!);
    assert.equal(
      per.reduce((a, c) => a + c),
      31,
    );
    for (const [i, n] of per.entries()) assert.ok(n >= 5, `${WORKERS[i]} ran ${n} of 31: ${per.join('/')}`);
  });
});
