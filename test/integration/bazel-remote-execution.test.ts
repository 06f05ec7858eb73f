import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { BazelWorkspace, hasBazel, processSummary } from '../helpers/bazel.js';
import { startServerProcess, type ServerProcess } from '../helpers/server.js';
import { tmpDir } from '../helpers/tmp.js';

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
  const remote = () => [
    `--remote_executor=${server.url}`,
    '--remote_instance_name=main',
    '--remote_default_exec_properties=OSFamily=linux',
    '--spawn_strategy=remote',
    '--remote_retries=0',
    '--jobs=8',
  ];

  before(async () => {
    assert.ok(hasBazel(), 'bazel is not installed: apt-get install -y bazel-bootstrap (see README)');
    server = await startServerProcess(['--data-dir', tmpDir('repr-data-'), '--executors', '4']);
    ws = new BazelWorkspace();
    await ws.ok(['test', '//...']);
    local = ws.outputHashes(PACKAGES);
    await ws.ok(['clean']);
  });

  after(async () => {
    await ws?.shutdown();
    await server?.stop();
  });

  it('runs every action remotely with results identical to local, then serves them all from the cache', async () => {
    const cold = processSummary(await ws.ok(['test', '//...', ...remote()]));
    const executed = cold.total - (cold.kinds.get('internal') ?? 0);
    assert.equal(cold.kinds.get('remote'), executed, `every action ran remotely: ${JSON.stringify([...cold.kinds])}`);
    assert.ok(executed >= 15, `expected at least 15 actions, got ${executed}`);
    assert.deepEqual(ws.outputHashes(PACKAGES), local, 'remote outputs equal the local build');

    await ws.ok(['clean']);
    const warm = processSummary(await ws.ok(['test', '//...', ...remote()]));
    assert.equal(warm.kinds.get('remote cache hit'), executed, `warm run is all cache hits: ${JSON.stringify([...warm.kinds])}`);
    assert.deepEqual(ws.outputHashes(PACKAGES), local);
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
