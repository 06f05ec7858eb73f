import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { ExecClient, uploadAction } from '../../src/client/execution-client.js';
import type { GetStatusResponse } from '../../src/proto/repr/worker/v1/worker.js';
import { ReapiClient } from '../../src/reapi/reapi-client.js';
import { metricValue, scrapeMetrics } from '../../support/metrics.js';
import { type PostgresServer, startPostgres } from '../../support/postgres.js';
import { type ServerProcess, startServerProcess, waitForStatus } from '../../support/servers.js';
import { runReprToEnd } from '../../support/spawn-server.js';
import { tmpDir } from '../../support/tmp.js';

const FAILED = 1;

/** The lines of `repr status` output from the schedulers' header to the shared queue. */
function schedulerSection(stdout: string): string[] {
  const lines = stdout.split('\n');
  const start = lines.findIndex((l) => l.startsWith('SCHEDULER '));
  const end = lines.findIndex((l) => l.startsWith('queued (all schedulers)'));
  assert.ok(start >= 0 && end > start, `a schedulers section, then the shared queue:\n${stdout}`);
  return lines.slice(start + 1, end).filter((l) => l.trim());
}

/**
 * `repr status` and the metrics of two scheduler processes sharing a real
 * PostgreSQL: each lists both schedulers, marks itself, and shows the one
 * shared queue; a SIGKILLed scheduler drops out once its heartbeat expires,
 * and its execution joins the shared queue.
 */
describe('repr status of schedulers sharing state', () => {
  let db: PostgresServer;
  let casNode: ServerProcess;
  let a: ServerProcess;
  let b: ServerProcess;
  const procs: ServerProcess[] = [];
  const clients: ExecClient[] = [];
  before(async () => {
    db = await startPostgres();
    casNode = await startServerProcess(['--data-dir', tmpDir('repr-cas-node-'), '--cache-only']);
    procs.push(casNode);
    const config = path.join(tmpDir('repr-status-farm-config-'), 'scheduler.json');
    writeFileSync(config, JSON.stringify({ storage: { cas: { type: 'remote', target: casNode.url } } }));
    const scheduler = async () => {
      const s = await startServerProcess([
        '--config',
        config,
        '--data-dir',
        tmpDir('repr-status-sched-'),
        '--state',
        db.url,
        '--scheduler-expiry',
        '1',
        '--executors',
        '1',
        '--metrics-listen',
        '127.0.0.1:0',
      ]);
      procs.push(s);
      return s;
    };
    a = await scheduler();
    b = await scheduler();
  });
  after(async () => {
    for (const c of clients) c.close();
    for (const p of procs) await p.stop('SIGKILL');
    db.stop();
  });

  it('lists every scheduler and the shared queue, and drops a killed one once it expires', async () => {
    // Three long actions for two executors: one each, one waiting in the shared queue.
    const cas = new ReapiClient({ target: casNode.address });
    const exec = new ExecClient(a.address);
    clients.push(exec);
    const run = `${process.pid}-${Date.now()}`;
    for (let i = 0; i < 3; i++) {
      const digest = await uploadAction(cas, { argv: ['/bin/sh', '-c', 'sleep 120'], salt: `status farm ${i} ${run}` });
      // Never awaited: the processes are killed mid-execution at the end.
      exec.execute(digest).catch(() => undefined);
    }
    const settled = (s: GetStatusResponse) =>
      s.queued === 1 && s.schedulers.length === 2 && s.schedulers.every((p) => p.busyExecutors === 1 && p.executors === 1 && p.workers === 1);
    await waitForStatus(a.url, settled);
    await waitForStatus(b.url, settled);

    const fromA = await runReprToEnd(['status', '--server', a.url]);
    assert.equal(fromA.code, 0, fromA.stderr);
    const rows = schedulerSection(fromA.stdout);
    assert.equal(rows.length, 2, fromA.stdout);
    const rowOf = (s: ServerProcess) => rows.find((r) => r.startsWith(`${s.address} `));
    assert.match(rowOf(a) ?? '', /^\S+ +\d+\.\ds ago +1 +1\/1 {2}\(this one\)$/, fromA.stdout);
    assert.match(rowOf(b) ?? '', /^\S+ +\d+\.\ds ago +1 +1\/1$/, fromA.stdout);
    assert.match(fromA.stdout, /^queued \(all schedulers\) 1$/m);
    assert.match(fromA.stdout, /^this scheduler: executing 1 {2}completed 0/m);
    // Then A's own executors, as a lone scheduler shows them.
    assert.match(fromA.stdout, /^\S+ \(built-in\) +local +\(built-in\) +1 +1 /m);

    const fromB = await runReprToEnd(['status', '--server', b.url]);
    assert.equal(fromB.code, 0, fromB.stderr);
    const rowsB = schedulerSection(fromB.stdout);
    assert.deepEqual(
      rowsB.filter((r) => r.endsWith('(this one)')).map((r) => r.split(' ')[0]),
      [b.address],
      fromB.stdout,
    );

    const json = await runReprToEnd(['status', '--server', a.url, '--json']);
    assert.equal(json.code, 0, json.stderr);
    const parsed = JSON.parse(json.stdout) as GetStatusResponse;
    assert.deepEqual(
      parsed.schedulers.map((p) => [p.address, p.self]).sort(),
      [
        [a.address, true],
        [b.address, false],
      ].sort(),
    );
    assert.ok(parsed.schedulers.every((p) => p.id && p.started && p.lastHeartbeat));

    const metrics = await scrapeMetrics(a);
    assert.equal(metricValue(metrics, 'repr_scheduler_peers'), 2);
    assert.equal(metricValue(metrics, 'repr_scheduler_queued_actions'), 1);
    assert.match(metrics, /# HELP repr_scheduler_queued_actions .*the shared queue/);

    // B's execution goes back in line once its row expires: two waiting, for A's one busy executor.
    await b.stop('SIGKILL');
    await waitForStatus(a.url, (s) => s.schedulers.length === 1 && s.queued === 2);
    const alone = await runReprToEnd(['status', '--server', a.url]);
    assert.equal(alone.code, 0, alone.stderr);
    const left = schedulerSection(alone.stdout);
    assert.equal(left.length, 1, alone.stdout);
    assert.ok(left[0]!.startsWith(`${a.address} `) && left[0]!.endsWith('(this one)'), alone.stdout);
    assert.doesNotMatch(alone.stdout, new RegExp(b.address.replace(/\./g, '\\.')));
    assert.match(alone.stdout, /^queued \(all schedulers\) 2$/m);
    assert.equal(metricValue(await scrapeMetrics(a), 'repr_scheduler_peers'), 1);

    // Without its database a shared scheduler cannot say who else is there: status fails in one line, the gauge reads 0.
    db.stop();
    const down = await runReprToEnd(['status', '--server', a.url]);
    assert.equal(down.code, FAILED, down.stdout);
    assert.match(down.stderr, /^repr: .*state database postgres:\/\/repr@127\.0\.0\.1:\d+\/repr/);
    assert.equal(down.stderr.trim().split('\n').length, 1, down.stderr);
    assert.equal(metricValue(await scrapeMetrics(a), 'repr_scheduler_peers'), 0);
  });
});
