import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { decodeOperation, ExecClient, type Observed, uploadAction } from '../../src/client/execution-client.js';
import { type Digest, fromWire, SHA256 } from '../../src/common/digest.js';
import { Code } from '../../src/common/errors.js';
import { ExecuteResponse } from '../../src/proto/build/bazel/remote/execution/v2/remote_execution.js';
import { ReapiClient } from '../../src/reapi/reapi-client.js';
import { type PostgresServer, startPostgres } from '../../support/postgres.js';
import { type ServerProcess, spawnWorker, startServerProcess, type WorkerProcess } from '../../support/servers.js';
import { tmpDir } from '../../support/tmp.js';

const ACTIONS = 500;
const TWINS = 20;

interface Job {
  i: number;
  digest: Digest;
  expected: string;
}

/**
 * A farm in processes: PostgreSQL, a CAS node, two schedulers sharing state,
 * three workers that know both. Mid-run one scheduler and one worker are
 * SIGKILLed; clients whose streams broke carry on with WaitExecution on the
 * survivor, as Bazel does. Every action must end with its own correct result,
 * recorded exactly once; identical actions sent to both schedulers at once
 * must execute once.
 */
describe('a farm of two schedulers and three workers', () => {
  let db: PostgresServer;
  let casNode: ServerProcess;
  const procs: (ServerProcess | WorkerProcess)[] = [];
  before(async () => {
    db = await startPostgres();
    casNode = await startServerProcess(['--data-dir', tmpDir('repr-cas-node-'), '--cache-only']);
    procs.push(casNode);
  });
  after(async () => {
    for (const p of procs) await p.stop('SIGKILL');
    db.stop();
  });

  it('completes 500 actions exactly once through the loss of a scheduler and a worker', async () => {
    const config = path.join(tmpDir('repr-farm-config-'), 'scheduler.json');
    writeFileSync(config, JSON.stringify({ storage: { cas: { type: 'remote', target: casNode.url } } }));
    const scheduler = async () => {
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
        '--worker-heartbeat-timeout',
        '2',
      ]);
      procs.push(s);
      return s;
    };
    const a = await scheduler();
    const b = await scheduler();
    const worker = async (name: string, first: ServerProcess, second: ServerProcess) => {
      const w = await spawnWorker(first.url, [
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
      ]);
      procs.push(w);
      return w;
    };
    await worker('w1', a, b);
    const w2 = await worker('w2', a, b);
    await worker('w3', b, a);

    const cas = new ReapiClient({ target: casNode.address });
    const run = `${process.pid}-${Date.now()}`;
    const jobs: Job[] = [];
    for (let i = 0; i < ACTIONS; i++) {
      const digest = await uploadAction(cas, {
        argv: ['/bin/sh', '-c', `echo "job ${i} read: $(cat in.txt)" > out.txt`],
        inputs: { 'in.txt': `input of job ${i} ${run}` },
        outputFiles: ['out.txt'],
      });
      jobs.push({ i, digest, expected: `job ${i} read: input of job ${i} ${run}\n` });
    }
    // Twins: the same action to both schedulers at once. Each prints a nonce made when it runs: one execution, one nonce.
    const twins: Digest[] = [];
    for (let i = 0; i < TWINS; i++) twins.push(await uploadAction(cas, { argv: ['/bin/sh', '-c', 'od -An -N8 -tx8 /dev/urandom'], salt: `twin ${i} ${run}` }));

    const clients = new Map([a, b].map((s) => [s, new ExecClient(s.address)]));
    let live = [a, b];
    let completed = 0;
    /** Execute on one scheduler; when its stream breaks, wait on a live one, as Bazel retries. */
    const execute = async (digest: Digest, on: ServerProcess): Promise<Observed> => {
      let name = '';
      try {
        const r = await clients.get(on)!.execute(digest, { onFirst: (n) => (name = n) });
        completed++;
        return r;
      } catch (e) {
        for (let attempt = 0; attempt < 50; attempt++) {
          const survivor = live[attempt % live.length]!;
          try {
            const r = name ? await clients.get(survivor)!.waitExecution(name) : await clients.get(survivor)!.execute(digest);
            completed++;
            return r;
          } catch {
            await new Promise((r) => setTimeout(r, 200));
          }
        }
        throw e;
      }
    };

    const results: Observed[] = new Array(ACTIONS);
    let next = 0;
    const lanes = Array.from({ length: 40 }, async (_, lane) => {
      while (next < ACTIONS) {
        const k = next++;
        results[k] = await execute(jobs[k]!.digest, lane % 2 ? a : b);
      }
    });
    const twinResults = Promise.all(twins.map((d) => Promise.all([execute(d, a), execute(d, b)])));
    // The chaos: once a fifth is done, a scheduler and a worker die at once.
    const started = Date.now();
    while (completed < ACTIONS / 5) await new Promise((r) => setTimeout(r, 20));
    console.log(`${completed} done in ${Date.now() - started} ms; killing a scheduler and a worker`);
    live = [b];
    await Promise.all([a.stop('SIGKILL'), w2.stop('SIGKILL')]);
    await Promise.all(lanes);
    console.log(`all done in ${Date.now() - started} ms`);

    for (const [k, r] of results.entries()) {
      const job = jobs[k]!;
      assert.equal(r.response?.status?.code ?? 0, Code.OK, `job ${job.i}: ${r.response?.status?.message}`);
      const out = r.response!.result!.outputFiles.find((f) => f.path === 'out.txt');
      assert.ok(out, `job ${job.i} has out.txt`);
      assert.equal((await cas.read(fromWire(SHA256, out.digest))).toString(), job.expected);
    }
    for (const [i, [x, y]] of (await twinResults).entries()) {
      // At once, they merge into one operation; a twin that reaches its scheduler only after the other has
      // finished (a loaded machine, or a retry after the kill) is served from the action cache instead.
      if (x.name !== y.name) assert.ok(x.response?.cachedResult || y.response?.cachedResult, `twin ${i}: one operation for both schedulers, or a cache hit`);
      const nonce = async (o: Observed) => (await cas.read(fromWire(SHA256, o.response!.result!.stdoutDigest))).toString();
      assert.equal(await nonce(x), await nonce(y), `twin ${i}: one execution`);
    }

    // The record: every operation finished once, none left in line or merged, the dead scheduler gone.
    const rows = db.psql(`SELECT action_hash, encode(response, 'hex') FROM repr_operations`).split('\n');
    const executed = new Map<string, number>();
    for (const row of rows) {
      const [hash, response] = row.split('|');
      assert.ok(response, `operation of ${hash} has a response`);
      const r = ExecuteResponse.decode(Buffer.from(response!, 'hex'));
      if (!r.cachedResult) executed.set(hash!, (executed.get(hash!) ?? 0) + 1);
    }
    for (const job of jobs) assert.equal(executed.get(job.digest.hash), 1, `job ${job.i} recorded exactly once`);
    for (const d of twins) assert.equal(executed.get(d.hash), 1, 'a twin recorded exactly once');
    assert.equal(db.psql('SELECT count(*) FROM repr_queue'), '0');
    assert.equal(db.psql('SELECT count(*) FROM repr_inflight'), '0');
    assert.equal(db.psql('SELECT count(*) FROM repr_schedulers'), '1');
    // The survivor still answers for operations the dead one accepted.
    const first = results.find((r) => r !== undefined)!;
    assert.equal(decodeOperation(await clients.get(b)!.getOperation(first.name)).response?.result?.exitCode, 0);
  });
});
