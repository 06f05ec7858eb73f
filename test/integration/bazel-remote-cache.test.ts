import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { BazelWorkspace, hasBazel, processSummary } from '../../support/bazel.js';
import { metricValue, scrapeMetrics } from '../../support/metrics.js';
import { startServerProcess, type ServerProcess } from '../../support/servers.js';
import { tmpDir } from '../../support/tmp.js';

const PACKAGES = ['gen', 'lib', 'app', 'tests', 'tree'];

/**
 * Real Bazel 4.2.3 against a real `repr server` process, as a user runs it:
 * a cold build fills the cache, and after `bazel clean` (and a server
 * restart on the same data directory) every action comes from the cache,
 * with outputs byte-identical to a build that never saw the server.
 */
describe('Bazel 4.2.3 with --remote_cache', () => {
  const dataDir = tmpDir('repr-data-');
  let server: ServerProcess;
  let ws: BazelWorkspace;
  let local: Map<string, string>;

  before(async () => {
    assert.ok(hasBazel(), 'bazel is not installed: apt-get install -y bazel-bootstrap (see README)');
    server = await startServerProcess(['--data-dir', dataDir, '--metrics-listen', '127.0.0.1:0']);
    ws = new BazelWorkspace();
    // The reference: a purely local build and test run.
    await ws.ok(['test', '//...']);
    local = ws.outputHashes(PACKAGES);
    await ws.ok(['clean']);
  });

  after(async () => {
    await ws?.shutdown();
    await server?.stop();
  });

  it('cold build runs locally and uploads; warm build after clean and server restart is all cache hits', async () => {
    const remote = (url: string) => [`--remote_cache=${url}`, '--remote_instance_name=main', '--remote_retries=0'];

    const cold = processSummary(await ws.ok(['test', '//...', ...remote(server.url)]));
    assert.equal(cold.kinds.get('remote cache hit') ?? 0, 0, 'nothing can be cached yet');
    const executed = cold.total - (cold.kinds.get('internal') ?? 0);
    assert.ok(executed >= 10, `expected the fixture to run at least 10 actions, got ${executed}`);
    assert.deepEqual(ws.outputHashes(PACKAGES), local, 'cold remote-cache build equals the local build');
    const lookups = (text: string, result: string) => metricValue(text, `repr_action_cache_lookups_total{via="get_action_result",result="${result}"}`);
    const calls = (text: string, method: string, code: string) =>
      metricValue(text, `repr_grpc_server_handling_seconds_count{method="/build.bazel.remote.execution.v2.ActionCache/${method}",code="${code}"}`);
    const coldMetrics = await scrapeMetrics(server);
    assert.equal(lookups(coldMetrics, 'miss'), executed, 'each action was looked up once and missed');
    assert.equal(lookups(coldMetrics, 'hit'), 0);
    assert.equal(calls(coldMetrics, 'GetActionResult', 'NOT_FOUND'), executed);
    assert.equal(calls(coldMetrics, 'UpdateActionResult', 'OK'), executed);
    assert.ok(metricValue(coldMetrics, 'repr_store_written_blobs_total{store="cas"}') > 0, 'uploads counted');
    const stored = metricValue(coldMetrics, 'repr_store_stored_bytes{store="cas",tier="slow"}');
    assert.ok(stored > 0, 'the disk tier holds what was uploaded');
    assert.ok(metricValue(coldMetrics, 'repr_store_written_bytes_total{store="cas"}') >= stored, 'all it holds was written since the start');

    // Restart: the cache must survive it.
    assert.equal(await server.stop(), 0, 'repr server exits cleanly on SIGTERM');
    server = await startServerProcess(['--data-dir', dataDir, '--metrics-listen', '127.0.0.1:0']);

    await ws.ok(['clean']);
    const warmLog = await ws.ok(['test', '//...', ...remote(server.url)]);
    const warm = processSummary(warmLog);
    if (warm.kinds.get('remote cache hit') !== executed) {
      // Which it was tells a lookup that missed (the entry or a blob it names is gone) from an output Bazel could not fetch.
      const acLines = (await scrapeMetrics(server)).split('\n').filter((l) => /^repr_action_cache_lookups_total|ActionCache\/|ByteStream\/Read/.test(l));
      const warnings = warmLog.split('\n').filter((l) => /WARNING|ERROR|remote/i.test(l) && !/INFO: \d+ process/.test(l));
      assert.fail(`every action is a remote cache hit: ${JSON.stringify([...warm.kinds])}\n${acLines.join('\n')}\n${warnings.slice(0, 40).join('\n')}`);
    }
    assert.equal(warm.total - (warm.kinds.get('internal') ?? 0), executed);
    assert.deepEqual(ws.outputHashes(PACKAGES), local, 'cached outputs are byte-identical to the local build');
    const warmMetrics = await scrapeMetrics(server);
    assert.equal(lookups(warmMetrics, 'hit'), executed, 'every lookup of the warm build hit');
    assert.equal(lookups(warmMetrics, 'miss'), 0);
    assert.equal(calls(warmMetrics, 'GetActionResult', 'OK'), executed);
    assert.ok(metricValue(warmMetrics, 'repr_store_read_bytes_total{store="cas"}') > 0, 'outputs were read from the CAS');
    assert.ok(metricValue(warmMetrics, 'repr_store_stored_bytes{store="cas",tier="slow"}') > 0, 'the CAS held its blobs across the restart');
  });
});
