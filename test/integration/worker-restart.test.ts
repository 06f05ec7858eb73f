import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readFileSync, utimesSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { Code } from '../../src/common/errors.js';
import { ExecClient, uploadAction } from '../../src/client/execution-client.js';
import { ReapiClient } from '../../src/reapi/reapi-client.js';
import { type ServerProcess, spawnWorker, startServerProcess, waitForStatus, type WorkerProcess } from '../../support/servers.js';
import { runReprToEnd } from '../../support/spawn-server.js';
import { tmpDir } from '../../support/tmp.js';

// Workers started here find their directories under this, as they would under a real $REPR_DATA_DIR.
const dataRoot = tmpDir('repr-data-root-');
process.env.REPR_DATA_DIR = dataRoot;
const workersDir = path.join(dataRoot, 'workers');
const DAY_MS = 24 * 3600 * 1000;
// Only the restarted worker offers it, so no other worker can take its actions.
const POOL = { OSFamily: 'linux', pool: 'restart' };
const OFFERS = ['--executor-property', 'OSFamily=linux', '--executor-property', 'pool=restart'];

/** Makes a directory look unused for `days` days, lock file included. */
function age(dir: string, days: number): void {
  const then = new Date(Date.now() - days * DAY_MS);
  if (existsSync(path.join(dir, 'repr.lock'))) utimesSync(path.join(dir, 'repr.lock'), then, then);
  utimesSync(dir, then, then);
}

/**
 * A worker is named after its host unless told otherwise, so that a
 * restarted worker takes up its old directory and cache; a second worker
 * under the same name on the host is refused; directories of workers gone
 * for staleDays are removed at start, never one a live worker holds.
 */
describe('a worker restarted under its default name', () => {
  const procs: (ServerProcess | WorkerProcess)[] = [];
  after(async () => {
    for (const p of procs) await p.stop('SIGKILL');
  });

  it('reuses its cache, refuses a twin, and removes only stale unlocked directories of other workers', async () => {
    const scheduler = await startServerProcess(['--data-dir', tmpDir('repr-sched-'), '--executors', '0']);
    procs.push(scheduler);
    const client = new ReapiClient({ target: scheduler.address });
    const exec = new ExecClient(scheduler.address);
    try {
      // Life 1: the input is fetched from the scheduler's CAS into the worker's cache.
      const content = `only in the first life's CAS ${process.pid} ${Date.now()}`;
      const check = (salt: string) =>
        uploadAction(client, {
          argv: ['/bin/sh', '-c', `grep -qxF "${content}" in.txt`],
          inputs: { 'in.txt': content },
          salt,
          doNotCache: true,
          platform: POOL,
        });
      const first = await spawnWorker(scheduler.url, ['--executors', '1', ...OFFERS]);
      procs.push(first);
      const own = path.join(workersDir, os.hostname().replace(/[^\w.-]/g, '_'));
      assert.equal(readFileSync(path.join(own, 'repr.lock'), 'utf8').trim(), String(first.child.pid), 'the worker holds its directory');
      const r1 = await exec.execute(await check('life 1'));
      assert.equal(r1.response?.status?.code ?? 0, Code.OK, r1.response?.status?.message);
      assert.equal(r1.response?.result?.exitCode, 0);
      assert.equal(await first.stop('SIGTERM'), 0);
      assert.ok(!existsSync(path.join(own, 'repr.lock')), 'a clean stop gives the directory up');

      // Other workers' directories: one long-running (locked, aged by hand), one gone for 30 days, one gone for a day.
      const busy = await spawnWorker(scheduler.url, ['--executors', '1', '--name', 'busy']);
      procs.push(busy);
      age(path.join(workersDir, 'busy'), 30);
      const stale = path.join(workersDir, 'retired');
      mkdirSync(path.join(stale, 'cas'), { recursive: true });
      writeFileSync(path.join(stale, 'cas', 'blob'), 'x');
      age(stale, 30);
      const recent = path.join(workersDir, 'recent');
      mkdirSync(recent, { recursive: true });
      age(recent, 1);

      // Life 2: its CAS is an empty server, so the input can only come from the cache of life 1.
      const empty = await startServerProcess(['--data-dir', tmpDir('repr-empty-cas-'), '--cache-only']);
      procs.push(empty);
      const second = await spawnWorker(scheduler.url, ['--executors', '1', ...OFFERS, '--cas', empty.url, '--stale-days', '7']);
      procs.push(second);
      await waitForStatus(scheduler.url, (s) => s.workers.length === 2);
      const r2 = await exec.execute(await check('life 2'));
      assert.equal(r2.response?.status?.code ?? 0, Code.OK, r2.response?.status?.message);
      assert.equal(r2.response?.result?.exitCode, 0, 'the input was found in the cache the first life filled');
      assert.match(r2.response!.result!.executionMetadata!.worker, new RegExp(`^${os.hostname()}/`));

      assert.ok(!existsSync(stale), 'a directory unused for 30 days is removed');
      const removed = second.logs.filter((l) => l.includes('removed the directory of a worker')).map((l) => JSON.parse(l) as { dir: string });
      assert.deepEqual(
        removed.map((r) => r.dir),
        [stale],
        'and logged, once',
      );
      assert.ok(existsSync(recent), 'one unused for a day is kept');
      assert.ok(existsSync(path.join(workersDir, 'busy', 'repr.lock')), "a live worker's directory is kept however old it looks");

      // The same worker started again while it runs.
      const twin = await runReprToEnd(['worker', '--scheduler', scheduler.url, '--executors', '1']);
      assert.equal(twin.code, 1, twin.stderr);
      assert.equal(
        twin.stderr,
        `repr: worker data directory ${own} is in use by another repr worker (pid ${second.child.pid}; lock file ${path.join(own, 'repr.lock')}): stop it, or give this one another --name (each name has its own directory, $REPR_DATA_DIR/workers/NAME) or --data-dir\n`,
      );
    } finally {
      client.close();
      exec.close();
    }
  });
});
