import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { type Digest, fromWire, SHA256 } from '../../src/common/digest.js';
import { Code } from '../../src/common/errors.js';
import { ReapiClient } from '../../src/reapi/reapi-client.js';
import { ExecClient, type Observed, uploadAction } from '../../src/client/execution-client.js';
import { REPR_BIN } from '../../support/spawn-server.js';
import { fetchStatus, type ServerProcess, spawnWorker, startServerProcess, waitForStatus, type WorkerProcess } from '../../support/servers.js';
import { tmpDir } from '../../support/tmp.js';
import { ExecutionStage_Value } from '../../src/proto/build/bazel/remote/execution/v2/remote_execution.js';

interface Job {
  i: number;
  big: boolean;
  digest: Digest;
  expected: string;
}

/** Uploads `n` distinct actions that each sleep a little and write out.txt from their own input. */
async function makeJobs(client: ReapiClient, n: number, opts: { sleep: number; needs?: (i: number) => Record<string, string> | undefined }): Promise<Job[]> {
  const jobs: Job[] = [];
  for (let i = 0; i < n; i++) {
    const extra = opts.needs?.(i);
    const digest = await uploadAction(client, {
      argv: ['/bin/sh', '-c', `sleep ${opts.sleep}; echo "job ${i} read: $(cat in.txt)" > out.txt`],
      inputs: { 'in.txt': `input of job ${i}` },
      outputFiles: ['out.txt'],
      platform: { OSFamily: 'linux', ...extra },
    });
    jobs.push({ i, big: extra !== undefined, digest, expected: `job ${i} read: input of job ${i}\n` });
  }
  return jobs;
}

/** Every job finished once, successfully, with its own output. */
async function checkResults(client: ReapiClient, jobs: Job[], results: Observed[]): Promise<void> {
  assert.equal(new Set(results.map((r) => r.name)).size, jobs.length, 'one operation per action');
  for (const [k, r] of results.entries()) {
    const job = jobs[k]!;
    assert.equal(r.stages.filter((s) => s === ExecutionStage_Value.COMPLETED).length, 1, `job ${job.i} completed exactly once (stages ${r.stages})`);
    const res = r.response!;
    assert.equal(res.status?.code ?? 0, Code.OK, `job ${job.i}: ${res.status?.message}`);
    assert.equal(res.result!.exitCode, 0);
    const out = res.result!.outputFiles.find((f) => f.path === 'out.txt');
    assert.ok(out, `job ${job.i} has out.txt`);
    assert.equal((await client.read(fromWire(SHA256, out.digest))).toString(), job.expected);
  }
}

describe('standalone workers', () => {
  let scheduler: ServerProcess;
  const workers: WorkerProcess[] = [];
  let client: ReapiClient;
  let exec: ExecClient;

  const startScheduler = async (heartbeatSeconds: number) => {
    scheduler = await startServerProcess(['--data-dir', tmpDir('repr-sched-'), '--executors', '0', '--worker-heartbeat-timeout', String(heartbeatSeconds)]);
    client = new ReapiClient({ target: scheduler.address });
    exec = new ExecClient(scheduler.address);
  };
  const startWorker = async (name: string, args: string[] = []) => {
    const w = await spawnWorker(scheduler.url, ['--name', name, '--data-dir', tmpDir(`repr-${name}-`), ...args]);
    workers.push(w);
    return w;
  };
  const stopAll = async () => {
    client?.close();
    exec?.close();
    for (const w of workers.splice(0)) {
      w.child.kill('SIGCONT');
      await w.stop('SIGKILL');
    }
    await scheduler?.stop();
  };

  describe('losing a worker to SIGKILL', () => {
    before(() => startScheduler(2));
    after(stopAll);

    it('runs 200 actions on three workers exactly once each, constrained ones only on the matching worker', async () => {
      const a = await startWorker('wa', ['--executors', '2']);
      await startWorker('wb', ['--executors', '2']);
      await startWorker('wbig', ['--executors', '2', '--executor-property', 'OSFamily=linux', '--executor-property', 'pool=big']);
      await waitForStatus(scheduler.url, (s) => s.workers.length === 3);

      const jobs = await makeJobs(client, 200, { sleep: 0.1, needs: (i) => (i % 5 === 0 ? { pool: 'big' } : undefined) });
      const pending = jobs.map((j) => exec.execute(j.digest));

      // Kill a worker while it is running something, part-way through.
      await waitForStatus(scheduler.url, (s) => s.completed >= 40 && (s.workers.find((w) => w.name === 'wa')?.running.length ?? 0) > 0, 60_000);
      a.child.kill('SIGKILL');
      const results = await Promise.all(pending);

      await checkResults(client, jobs, results);
      for (const [k, r] of results.entries()) {
        const worker = r.response!.result!.executionMetadata!.worker;
        assert.notEqual(worker, '', 'the result names its executor');
        if (jobs[k]!.big) assert.match(worker, /^wbig\//, `job ${k} needs pool=big but ran on ${worker}`);
      }
      const s = await fetchStatus(scheduler.url);
      assert.equal(s.completed, 200, 'the scheduler recorded exactly one result per action');
      assert.ok(s.requeued >= 1, 'the killed worker held actions that ran again elsewhere');
      assert.deepEqual(s.workers.map((w) => w.name).sort(), ['wb', 'wbig'], 'the killed worker is gone');
      const ran = results.filter((r) => r.response!.result!.executionMetadata!.worker.startsWith('wa/')).length;
      assert.ok(ran > 0 && ran < 200, `the killed worker delivered ${ran} results before it died`);

      // What an operator sees.
      const cli = spawnSync(process.execPath, [REPR_BIN, 'status', '--server', scheduler.url], { encoding: 'utf8' });
      assert.equal(cli.status, 0, cli.stderr);
      assert.match(cli.stdout, /queued 0 +executing 0 +completed 200/);
      assert.match(cli.stdout, /^wbig +127\.0\.0\.1:\d+ +anonymous +2 +0 +\d+ .*pool=big/m);
      assert.match(cli.stdout, /^wb +127\.0\.0\.1:\d+ +anonymous +2 /m);
    });
  });

  describe('a worker cut off with SIGSTOP past the heartbeat timeout', () => {
    before(() => startScheduler(1.5));
    after(stopAll);

    it('is dropped, its actions run elsewhere, and nothing is lost or recorded twice when it comes back', async () => {
      const x = await startWorker('wx', ['--executors', '2', '--executor-property', 'OSFamily=linux', '--executor-property', 'pool=x']);
      await startWorker('wy', ['--executors', '2']);
      await waitForStatus(scheduler.url, (s) => s.workers.length === 2);

      // Four need wx (pool=x): they must wait for it to come back, not fail.
      const jobs = await makeJobs(client, 24, { sleep: 0.5, needs: (i) => (i < 4 ? { pool: 'x' } : undefined) });
      const pending = jobs.map((j) => exec.execute(j.digest));
      await waitForStatus(scheduler.url, (s) => (s.workers.find((w) => w.name === 'wx')?.running.length ?? 0) > 0, 30_000);
      x.child.kill('SIGSTOP');
      const dropped = await waitForStatus(scheduler.url, (s) => !s.workers.some((w) => w.name === 'wx'), 10_000);
      assert.ok(dropped.requeued >= 1, 'the stopped worker lost its leases');
      await new Promise((r) => setTimeout(r, 1000)); // its sandboxed actions go on meanwhile
      x.child.kill('SIGCONT');

      const results = await Promise.all(pending);
      await checkResults(client, jobs, results);
      for (const r of results.slice(0, 4)) assert.match(r.response!.result!.executionMetadata!.worker, /^wx\//);
      const s = await waitForStatus(scheduler.url, (st) => st.workers.some((w) => w.name === 'wx'), 15_000);
      assert.equal(s.completed, jobs.length, 'exactly one result recorded per action');
      assert.ok(x.child.exitCode === null, 'the worker survived and reconnected');
    });
  });

  describe('draining on SIGTERM', () => {
    before(() => startScheduler(5));
    after(stopAll);

    it('finishes what it runs, then exits; with a short drain timeout hands the rest back', async () => {
      const patient = await startWorker('patient', ['--executors', '1']);
      await waitForStatus(scheduler.url, (s) => s.workers.length === 1);
      const [job] = await makeJobs(client, 1, { sleep: 1.5 });
      const pending = exec.execute(job!.digest);
      await waitForStatus(scheduler.url, (s) => s.executing === 1);
      const code = patient.stop('SIGTERM');
      await waitForStatus(scheduler.url, (s) => s.workers[0]?.draining === true, 5000);
      const r = await pending;
      await checkResults(client, [job!], [r]);
      assert.match(r.response!.result!.executionMetadata!.worker, /^patient\//);
      assert.equal(await code, 0, 'the worker exits cleanly after draining');

      const hasty = await startWorker('hasty', ['--executors', '1', '--drain-timeout', '0.5']);
      await waitForStatus(scheduler.url, (s) => s.workers.length === 1);
      const [slow] = await makeJobs(client, 1, { sleep: 3 });
      const slowRun = exec.execute(slow!.digest);
      await waitForStatus(scheduler.url, (s) => s.executing === 1);
      assert.equal(await hasty.stop('SIGTERM'), 0);
      const before = await fetchStatus(scheduler.url);
      assert.equal(before.requeued, 1, 'the unfinished action was handed back');
      assert.equal(before.queued, 1, 'and waits for another worker');
      await startWorker('rescuer', ['--executors', '1']);
      const done = await slowRun;
      await checkResults(client, [slow!], [done]);
      assert.match(done.response!.result!.executionMetadata!.worker, /^rescuer\//);
    });
  });

  describe('a CAS on another endpoint than the scheduler', () => {
    let cas: ServerProcess;
    before(async () => {
      cas = await startServerProcess(['--data-dir', tmpDir('repr-cas-'), '--cache-only']);
      const config = path.join(tmpDir('repr-conf-'), 'scheduler.json');
      writeFileSync(
        config,
        JSON.stringify({
          storage: { cas: { type: 'read-caching', fast: { type: 'memory', limitBytes: '64MiB' }, slow: { type: 'remote', target: cas.url } } },
        }),
      );
      scheduler = await startServerProcess(['--config', config, '--data-dir', tmpDir('repr-sched-'), '--executors', '0']);
      client = new ReapiClient({ target: scheduler.address });
      exec = new ExecClient(scheduler.address);
    });
    after(async () => {
      await stopAll();
      await cas?.stop();
    });

    it('runs actions whose inputs and outputs live only in that CAS', async () => {
      await startWorker('wcas', ['--executors', '1', '--cas', cas.url]);
      await waitForStatus(scheduler.url, (s) => s.workers.length === 1);
      const jobs = await makeJobs(client, 3, { sleep: 0 });
      const results = await Promise.all(jobs.map((j) => exec.execute(j.digest)));
      await checkResults(client, jobs, results);
      const direct = new ReapiClient({ target: cas.address });
      try {
        const out = fromWire(SHA256, results[0]!.response!.result!.outputFiles[0]!.digest);
        assert.equal((await direct.read(out)).toString(), jobs[0]!.expected, 'the output was stored in the separate CAS');
        assert.deepEqual(await direct.findMissing([jobs[0]!.digest]), [], 'the action the client uploaded went to the separate CAS');
      } finally {
        direct.close();
      }
    });
  });
});
