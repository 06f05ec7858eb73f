import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { BazelWorkspace, hasBazel, processSummary } from '../../support/bazel.js';
import { fetchStatus, spawnWorker, startServerProcess, waitForStatus, type ServerProcess, type WorkerProcess } from '../../support/servers.js';
import { tmpDir } from '../../support/tmp.js';

const PACKAGES = ['gen', 'lib', 'app', 'tests', 'tree'];

/**
 * Real Bazel 4.2.3 sending every action to `repr server` with
 * --remote_executor: genrules (an executable tool, ~1 and 5 MiB outputs), a
 * directory output, C++ compile/link/test and sh_tests run in repr's sandbox;
 * results match a local build, the warm run after `bazel clean` is fully
 * cached, a failing test shows FAILED with its log and a sleeping one TIMEOUT.
 */
describe('Bazel 4.2.3 with --remote_executor', () => {
  let server: ServerProcess;
  let ws: BazelWorkspace;
  let local: Map<string, string>;
  const remote = (): string[] => [
    `--remote_executor=${server.url}`,
    '--remote_instance_name=main',
    '--remote_default_exec_properties=OSFamily=linux',
    '--spawn_strategy=remote',
    '--remote_retries=0',
    '--jobs=8',
  ];

  before(async () => {
    assert.ok(hasBazel(), 'bazel is not installed: apt-get install -y bazel-bootstrap (see README)');
    ws = new BazelWorkspace();
    await ws.ok(['test', '//...']);
    local = ws.outputHashes(PACKAGES);
  });

  after(async () => {
    await ws?.shutdown();
  });

  /** Cold: every action runs remotely, outputs equal the local build; warm after `bazel clean`: all cache hits. */
  const coldThenWarm = async (): Promise<number> => {
    const cold = processSummary(await ws.ok(['test', '//...', ...remote()]));
    const executed = cold.total - (cold.kinds.get('internal') ?? 0);
    assert.equal(cold.kinds.get('remote'), executed, `every action ran remotely: ${JSON.stringify([...cold.kinds])}`);
    assert.ok(executed >= 15, `expected at least 15 actions, got ${executed}`);
    assert.deepEqual(ws.outputHashes(PACKAGES), local, 'remote outputs equal the local build');

    await ws.ok(['clean']);
    const warm = processSummary(await ws.ok(['test', '//...', ...remote()]));
    assert.equal(warm.kinds.get('remote cache hit'), executed, `warm run is all cache hits: ${JSON.stringify([...warm.kinds])}`);
    assert.deepEqual(ws.outputHashes(PACKAGES), local);
    return executed;
  };

  describe('a scheduler with two `repr worker`s and no built-in executors', () => {
    const workers: WorkerProcess[] = [];
    before(async () => {
      server = await startServerProcess(['--data-dir', tmpDir('repr-data-'), '--executors', '0']);
      for (const name of ['bazel-w1', 'bazel-w2'])
        workers.push(await spawnWorker(server.url, ['--name', name, '--executors', '2', '--data-dir', tmpDir(`repr-${name}-`)]));
      await waitForStatus(server.url, (s) => s.workers.length === 2);
      await ws.ok(['clean']);
    });
    after(async () => {
      for (const w of workers) await w.stop();
      await server?.stop();
    });

    it('runs every action on the workers with results identical to local, then serves them from the cache', async () => {
      const executed = await coldThenWarm();
      const s = await fetchStatus(server.url);
      assert.equal(s.completed, executed, 'the workers ran every action');
      assert.ok(
        s.workers.every((w) => w.completed > 0),
        `both workers took work: ${s.workers.map((w) => `${w.name}=${w.completed}`).join(' ')}`,
      );
    });
  });

  describe('the all-in-one server with built-in executors', () => {
    before(async () => {
      server = await startServerProcess(['--data-dir', tmpDir('repr-data-'), '--executors', '4']);
      await ws.ok(['clean']);
    });
    after(async () => {
      await server?.stop();
    });

    it('runs every action remotely with results identical to local, then serves them all from the cache', async () => {
      await coldThenWarm();
    });

    it('reports a failing test as FAILED with its log', async () => {
      const r = await ws.run(['test', '//failing:fails', ...remote()]);
      assert.equal(r.code, 3, `bazel exits 3 when tests fail:\n${r.stderr.slice(-3000)}`);
      assert.match(r.stdout + r.stderr, /\/\/failing:fails\s+FAILED/);
      const log = readFileSync(path.join(ws.dir, 'bazel-testlogs', 'failing', 'fails', 'test.log'), 'utf8');
      assert.match(log, /this test fails on purpose/);
    });

    it('reports a test that outlives its timeout as TIMEOUT', async () => {
      const t = Date.now();
      const r = await ws.run(['test', '//failing:sleeps', '--test_timeout=3', ...remote()]);
      assert.equal(r.code, 3, r.stderr.slice(-3000));
      assert.match(r.stdout + r.stderr, /\/\/failing:sleeps\s+TIMEOUT/);
      assert.ok(Date.now() - t < 40_000, 'the sandbox killed the test at its timeout rather than after 60 s');
    });
  });
});
