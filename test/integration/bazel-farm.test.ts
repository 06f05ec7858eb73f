import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { ExecuteResponse } from '../../src/proto/build/bazel/remote/execution/v2/remote_execution.js';
import { BazelWorkspace, hasBazel } from '../../support/bazel.js';
import { type HaproxyServer, startHaproxy } from '../../support/haproxy.js';
import { type PostgresServer, startPostgres } from '../../support/postgres.js';
import { type ServerProcess, spawnWorker, startServerProcess, type WorkerProcess } from '../../support/servers.js';
import { tmpDir } from '../../support/tmp.js';

const PACKAGES = ['gen', 'lib', 'app', 'tests', 'tree'];

/**
 * Real Bazel 4.2.3 through HAProxy to two schedulers that share PostgreSQL
 * and a CAS node, with two workers that know both. Mid-build the scheduler
 * holding most of Bazel's connections is SIGKILLed: Bazel retries through
 * HAProxy on the survivor, the build completes with outputs identical to a
 * local build, and the database records each action's result once.
 */
describe('Bazel 4.2.3 through HAProxy to two schedulers, one killed mid-build', () => {
  let db: PostgresServer;
  let ws: BazelWorkspace;
  let proxy: HaproxyServer;
  const procs: (ServerProcess | WorkerProcess)[] = [];
  before(async () => {
    assert.ok(hasBazel(), 'bazel is not installed: apt-get install -y bazel-bootstrap (see README)');
    db = await startPostgres();
    ws = new BazelWorkspace();
  });
  after(async () => {
    await ws?.shutdown();
    proxy?.stop();
    for (const p of procs) await p.stop('SIGKILL');
    db?.stop();
  });

  it('completes the build with outputs identical to a local one, every result recorded once', async () => {
    await ws.ok(['test', '//...']);
    const local = ws.outputHashes(PACKAGES);
    await ws.ok(['clean']);

    const casNode = await startServerProcess(['--data-dir', tmpDir('repr-cas-node-'), '--cache-only']);
    procs.push(casNode);
    const config = path.join(tmpDir('repr-farm-config-'), 'scheduler.json');
    writeFileSync(config, JSON.stringify({ storage: { cas: { type: 'remote', target: casNode.url } } }));
    const schedulers: ServerProcess[] = [];
    for (let i = 0; i < 2; i++) {
      const s = await startServerProcess([
        '--config',
        config,
        '--data-dir',
        tmpDir('repr-sched-'),
        '--state',
        db.url,
        '--scheduler-expiry',
        '2',
        '--executors',
        '0',
      ]);
      procs.push(s);
      schedulers.push(s);
    }
    const [a, b] = schedulers as [ServerProcess, ServerProcess];
    for (const [name, first, second] of [
      ['bazel-w1', a, b],
      ['bazel-w2', b, a],
    ] as const) {
      procs.push(
        await spawnWorker(first.url, [
          '--scheduler',
          second.url,
          '--name',
          name,
          '--executors',
          '2',
          '--cas',
          casNode.url,
          '--data-dir',
          tmpDir(`repr-${name}-`),
        ]),
      );
    }
    proxy = await startHaproxy(schedulers.map((s) => s.address));

    const build = ws.run([
      'test',
      '//...',
      `--remote_executor=grpc://${proxy.address}`,
      '--remote_instance_name=main',
      '--remote_default_exec_properties=OSFamily=linux',
      '--spawn_strategy=remote',
      '--remote_retries=10',
      '--jobs=8',
    ]);
    // Mid-build: some actions are done, the rest are not.
    const doneRows = () => Number(db.psql('SELECT count(*) FROM repr_operations WHERE response IS NOT NULL'));
    const deadline = Date.now() + 120_000;
    while (doneRows() < 3) {
      assert.ok(Date.now() < deadline, 'the build never got going');
      await new Promise((r) => setTimeout(r, 100));
    }
    const sessions = await proxy.sessions();
    const victim = (sessions.get(a.address) ?? 0) >= (sessions.get(b.address) ?? 0) ? a : b;
    await victim.stop('SIGKILL');
    const killedAt = doneRows();
    console.log(
      `killed the scheduler holding ${sessions.get(victim.address)} of ${[...sessions.values()].reduce((x, y) => x + y, 0)} connections, ${killedAt} actions done`,
    );

    const r = await build;
    assert.equal(r.code, 0, `the build completed despite the loss of a scheduler:\n${r.stderr.slice(-4000)}`);
    assert.ok(killedAt < doneRows(), 'actions finished after the kill');
    assert.deepEqual(ws.outputHashes(PACKAGES), local, 'outputs equal the local build');

    const executed = new Map<string, number>();
    for (const row of db.psql(`SELECT action_hash, encode(response, 'hex') FROM repr_operations`).split('\n')) {
      const [hash, response] = row.split('|');
      assert.ok(response, `operation of action ${hash} has a response`);
      if (!ExecuteResponse.decode(Buffer.from(response!, 'hex')).cachedResult) executed.set(hash!, (executed.get(hash!) ?? 0) + 1);
    }
    const twice = [...executed].filter(([, n]) => n > 1);
    assert.deepEqual(twice, [], 'no action result recorded twice');
    assert.equal(db.psql('SELECT count(*) FROM repr_queue'), '0');
  });
});
