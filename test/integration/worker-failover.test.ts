import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { after, describe, it } from 'node:test';
import { ExecClient, uploadAction } from '../../src/client/execution-client.js';
import { Code } from '../../src/common/errors.js';
import { ReapiClient } from '../../src/reapi/reapi-client.js';
import { startingPoint } from '../../src/worker/scheduler-rotation.js';
import { freePort } from '../../support/postgres.js';
import { fetchStatus, startServerProcess, waitForStatus } from '../../support/servers.js';
import { runReprToEnd, spawnRepr, waitForLog, type WorkerProcess } from '../../support/spawn-server.js';
import { tmpDir } from '../../support/tmp.js';

/** A worker name that starts at the first scheduler of a list of `n`, so that the order of attempts is known. */
function nameStartingFirst(n: number): string {
  for (let i = 0; ; i++) {
    const name = `failover-${process.pid}-${i}`;
    if (startingPoint(name) % n === 0) return name;
  }
}

/** Processes whose command line holds `marker`, as /proc shows them. */
function processesWith(marker: string): number[] {
  return readdirSync('/proc')
    .filter((d) => /^\d+$/.test(d) && Number(d) !== process.pid)
    .filter((d) => {
      try {
        return readFileSync(`/proc/${d}/cmdline`, 'utf8').includes(marker);
      } catch {
        return false; // gone meanwhile
      }
    })
    .map(Number);
}

const records = (p: WorkerProcess) =>
  p.logs.flatMap((l) => {
    try {
      return [JSON.parse(l) as Record<string, unknown>];
    } catch {
      return [];
    }
  });

/** Starts `repr worker` with these arguments; resolves once it registered with some scheduler. */
const startWorker = (args: string[]) =>
  spawnRepr(['worker', '--executors', '1', '--data-dir', tmpDir('repr-w-'), ...args], (rec) => rec.msg === 'registered with the scheduler', 30_000);

/**
 * A worker given several schedulers: when the one it works for dies, it
 * abandons what it was executing for it and registers with another at once,
 * which then gets its actions executed; schedulers it cannot use on the way
 * are passed over without waiting.
 */
describe('a worker with several schedulers', () => {
  const procs: { stop(signal?: NodeJS.Signals): Promise<unknown> }[] = [];
  const closers: (() => void)[] = [];
  after(async () => {
    for (const c of closers) c();
    for (const p of procs) await p.stop('SIGKILL');
  });

  it('moves to the other scheduler within a second of its own being killed, aborting the action it ran there, and executes the next', async () => {
    // Each with its own data: nothing is shared but the worker.
    const a = await startServerProcess(['--data-dir', tmpDir('repr-a-'), '--executors', '0']);
    procs.push(a);
    const b = await startServerProcess(['--data-dir', tmpDir('repr-b-'), '--executors', '0']);
    procs.push(b);
    const name = nameStartingFirst(2);
    const worker = await startWorker(['--name', name, '-s', a.url, '-s', b.url]);
    procs.push(worker);
    assert.equal(records(worker).find((r) => r.msg === 'registered with the scheduler')?.scheduler, a.url);

    // An action that would run for minutes, executing on the worker for A when A dies.
    const marker = `failover-marker-${process.pid}-${Date.now()}`;
    const clientA = new ReapiClient({ target: a.address });
    const execA = new ExecClient(a.address);
    closers.push(
      () => clientA.close(),
      () => execA.close(),
    );
    const long = await uploadAction(clientA, { argv: ['/bin/sh', '-c', `sleep 300; echo ${marker}`], doNotCache: true });
    execA.execute(long).catch(() => {}); // its stream dies with A
    await waitForStatus(a.url, (s) => s.workers.some((w) => w.name === name && w.running.length === 1));
    const deadline = Date.now() + 10_000;
    while (processesWith(marker).length === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    assert.ok(processesWith(marker).length > 0, 'the action runs on the worker');

    const before = worker.logs.length;
    const killedAt = Date.now();
    await a.stop('SIGKILL');
    const registered = await waitForLog(worker, (r) => r.msg === 'registered with the scheduler' && r.scheduler === b.url, 10_000);
    const tookMs = Date.now() - killedAt;
    assert.ok(registered);
    assert.ok(tookMs < 2000, `registered with the other scheduler ${tookMs} ms after the first died`);
    const since = records({ ...worker, logs: worker.logs.slice(before) });
    const lost = since.find((r) => typeof r.msg === 'string' && r.msg.startsWith('lost the scheduler'));
    assert.match(String(lost?.msg), new RegExp(`^lost the scheduler at ${a.url} \\(.*\\); connecting to ${b.url}$`));
    assert.deepEqual(
      since.filter((r) => r.retryInMs !== undefined),
      [],
      'no wait between two schedulers',
    );
    // The worker registers again only once its executors are free: the action for A was stopped, not left running.
    assert.deepEqual(processesWith(marker), [], 'the abandoned action no longer runs');

    // B's clients put their inputs in B's CAS, which is where the worker now fetches them.
    const clientB = new ReapiClient({ target: b.address });
    const execB = new ExecClient(b.address);
    closers.push(
      () => clientB.close(),
      () => execB.close(),
    );
    const content = `only in B's CAS ${process.pid} ${Date.now()}`;
    const check = await uploadAction(clientB, { argv: ['/bin/sh', '-c', `grep -qxF "${content}" in.txt`], inputs: { 'in.txt': content }, doNotCache: true });
    const r = await execB.execute(check);
    assert.equal(r.response?.status?.code ?? 0, Code.OK, r.response?.status?.message);
    assert.equal(r.response?.result?.exitCode, 0, 'the input came from the CAS of the scheduler that leased the action');
    assert.match(r.response!.result!.executionMetadata!.worker, new RegExp(`^${name}/`));
    // A result of the abandoned action sent on B's stream would reach B as one for a lease it never gave.
    const status = await fetchStatus(b.url);
    assert.deepEqual({ completed: status.completed, staleResults: status.staleResults }, { completed: 1, staleResults: 0 });
    assert.equal(await worker.stop('SIGTERM'), 0);
  });

  it('passes over an unreachable address and a server that is no scheduler at once, and follows a host name', async () => {
    const dead = `grpc://127.0.0.1:${await freePort()}`;
    const cacheOnly = await startServerProcess(['--data-dir', tmpDir('repr-cache-'), '--cache-only']);
    procs.push(cacheOnly);
    const b = await startServerProcess(['--data-dir', tmpDir('repr-b-'), '--executors', '0']);
    procs.push(b);
    // A host name, in a comma-separated list: as a config file or a DNS-based setup would write it.
    const byName = `grpc://localhost:${b.address.split(':')[1]}`;
    const worker = await startWorker(['--name', nameStartingFirst(3), '--scheduler', `${dead}, ${cacheOnly.url},${byName}`]);
    procs.push(worker);
    const all = records(worker);
    assert.equal(all.find((r) => r.msg === 'registered with the scheduler')?.scheduler, byName);
    const lines = all.map((r) => String(r.msg));
    const unreachable = lines.findIndex((m) => m.startsWith(`cannot reach ${dead}: connection refused`));
    const notScheduler = lines.findIndex((m) => m.startsWith(`${cacheOnly.url} is not a repr scheduler`));
    assert.ok(unreachable >= 0 && lines[unreachable]!.endsWith(`; connecting to ${cacheOnly.url}`), lines.join('\n'));
    assert.ok(notScheduler > unreachable && lines[notScheduler]!.endsWith(`; connecting to ${byName}`), lines.join('\n'));
    assert.equal(all[notScheduler]!.level, 50, 'a server that is no scheduler needs an operator: an error, not the end of the worker');
    assert.deepEqual(
      all.filter((r) => r.retryInMs !== undefined),
      [],
      'no wait while a scheduler of the list is untried',
    );
    assert.equal(await worker.stop('SIGTERM'), 0);
  });

  it('refuses a list mixing TLS and plaintext schedulers, in one line naming the fix', async () => {
    const r = await runReprToEnd(['worker', '-s', 'grpcs://a.example:1', '-s', 'grpc://b.example:2', '--data-dir', tmpDir('repr-w-')]);
    assert.equal(r.code, 2, r.stderr);
    assert.equal(
      r.stderr,
      'repr: invalid configuration: scheduler: mixes grpcs:// (grpcs://a.example:1) and plaintext (grpc://b.example:2) schedulers; a worker falling over to a plaintext one would send its token and actions in the clear: make them all grpcs:// or all grpc://\n',
    );
  });
});
