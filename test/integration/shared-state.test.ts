import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { decodeOperation, ExecClient, uploadAction } from '../../src/client/execution-client.js';
import { fromWire, SHA256 } from '../../src/common/digest.js';
import { Code } from '../../src/common/errors.js';
import { ExecutionStage_Value } from '../../src/proto/build/bazel/remote/execution/v2/remote_execution.js';
import { ReapiClient } from '../../src/reapi/reapi-client.js';
import { type PostgresServer, startPostgres } from '../../support/postgres.js';
import { type ServerProcess, startServerProcess } from '../../support/servers.js';
import { tmpDir } from '../../support/tmp.js';

/**
 * Schedulers in their own processes sharing a real PostgreSQL database and
 * one CAS node: a scheduler that never saw an operation answers for it, and
 * one that was killed mid-execution is taken for dead once its heartbeat
 * expires, its execution finished elsewhere exactly once.
 */
describe('schedulers sharing state in PostgreSQL', () => {
  let db: PostgresServer;
  let casNode: ServerProcess;
  let config: string;
  const procs: ServerProcess[] = [];
  before(async () => {
    db = await startPostgres();
    casNode = await startServerProcess(['--data-dir', tmpDir('repr-cas-node-'), '--cache-only']);
    procs.push(casNode);
    config = path.join(tmpDir('repr-farm-config-'), 'scheduler.json');
    writeFileSync(config, JSON.stringify({ storage: { cas: { type: 'remote', target: casNode.url } } }));
  });
  after(async () => {
    for (const p of procs) await p.stop('SIGKILL');
    db.stop();
  });

  async function scheduler(extra: string[] = []): Promise<ServerProcess> {
    const s = await startServerProcess(['--config', config, '--data-dir', tmpDir('repr-sched-'), '--state', db.url, '--scheduler-expiry', '2', ...extra]);
    procs.push(s);
    return s;
  }

  it('a restarted scheduler answers GetOperation and WaitExecution for operations another ran, and finishes what a killed one left', async () => {
    const cas = new ReapiClient({ target: casNode.address });
    const a = await scheduler(['--executors', '1']);
    const execA = new ExecClient(a.address);
    const quick = await uploadAction(cas, { argv: ['/bin/sh', '-c', 'echo quick'], salt: `quick ${Date.now()}` });
    const done = await execA.execute(quick);
    assert.equal(done.response?.status?.code ?? 0, Code.OK, done.response?.status?.message);

    // Long enough to be mid-execution when its scheduler dies.
    const marker = `${Date.now()}`;
    const slow = await uploadAction(cas, { argv: ['/bin/sh', '-c', `sleep 2; echo slow ${marker}`], salt: `slow ${marker}` });
    let slowName = '';
    const orphaned = execA.execute(slow, { onFirst: (n) => (slowName = n) }).catch((e: Error) => e);
    for (let i = 0; i < 100 && !slowName; i++) await new Promise((r) => setTimeout(r, 50));
    assert.ok(slowName, 'the slow operation was named');
    await new Promise((r) => setTimeout(r, 500));
    await a.stop('SIGKILL');
    assert.ok((await orphaned) instanceof Error, "the killed scheduler's stream broke");

    const c = await scheduler(['--executors', '1']);
    const execC = new ExecClient(c.address);
    const old = decodeOperation(await execC.getOperation(done.name));
    assert.equal(old.stage, ExecutionStage_Value.COMPLETED, 'C answers for an operation only A saw');
    assert.equal(old.response?.result?.exitCode, 0);
    const finished = await execC.waitExecution(slowName);
    assert.equal(finished.response?.status?.code ?? 0, Code.OK, finished.response?.status?.message);
    assert.equal(finished.response?.result?.exitCode, 0);
    const stdout = await cas.read(fromWire(SHA256, finished.response!.result!.stdoutDigest));
    assert.equal(stdout.toString(), `slow ${marker}\n`);
    // Exactly once: one finished row, and the database says the queue is empty.
    assert.equal(db.psql(`SELECT count(*) FROM repr_operations WHERE name = '${slowName}' AND response IS NOT NULL`), '1');
    assert.equal(db.psql('SELECT count(*) FROM repr_queue'), '0');
    assert.equal(db.psql('SELECT count(*) FROM repr_schedulers'), '1', 'the dead scheduler is gone from the table');
  });
});
