import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { systemClock } from '../../../src/common/clock.js';
import { silentLogger } from '../../../src/common/logger.js';
import type { ExecutionTask } from '../../../src/executor/execution-task.js';
import { BUILT_IN, type ExecutorSlot } from '../../../src/executor/executor-slot.js';
import { ExecuteResponse, ExecutionStage_Value } from '../../../src/proto/build/bazel/remote/execution/v2/remote_execution.js';
import { PgState } from '../../../src/scheduler/pg-state.js';
import type { OperationState, PoolLabels } from '../../../src/scheduler/scheduler.js';
import { SharedScheduler } from '../../../src/scheduler/shared-scheduler.js';
import { ActionCache } from '../../../src/storage/action-cache.js';
import { MemoryBlobStore } from '../../../src/storage/memory-store.js';
import { type PostgresServer, startPostgres } from '../../../support/postgres.js';
import { caps, OWNER, ok, slot, submitReq } from './harness.js';

// Several schedulers in one process on one real PostgreSQL database: each
// test gets a database of its own, so rows never leak between tests.
describe('SharedScheduler on PostgreSQL', () => {
  let db: PostgresServer;
  const open: SharedScheduler[] = [];
  before(async () => {
    db = await startPostgres();
  });
  after(async () => {
    for (const s of open) await s.close();
    db.stop();
  });

  function freshDatabase(): string {
    return db.createDatabase(`t_${randomUUID().replaceAll('-', '')}`);
  }

  async function scheduler(url: string, name: string, expiryMs = 2000): Promise<SharedScheduler> {
    const cas = new MemoryBlobStore(1 << 20);
    const s = await SharedScheduler.open({
      url,
      address: () => name,
      cas,
      actionCache: new ActionCache(new MemoryBlobStore(1 << 20), cas),
      log: silentLogger(),
      expiryMs,
    });
    open.push(s);
    return s;
  }

  function done(s: SharedScheduler, name: string): Promise<OperationState> {
    return new Promise((resolve) => {
      const stop = s.watch(name, (st) => {
        if (!st.response) return;
        stop();
        resolve(st);
      });
    });
  }

  it('runs an action submitted to one scheduler on the executor of another, and the first one streams its stages', async () => {
    const url = freshDatabase();
    const a = await scheduler(url, 'a');
    const b = await scheduler(url, 'b');
    const tasks: ExecutionTask[] = [];
    b.addExecutor(slot('b-exec', systemClock, { tasks, workMs: 100 }));
    const op = await a.submit(submitReq(1), OWNER);
    const stages: number[] = [];
    const finished = new Promise<OperationState>((resolve) => {
      a.watch(op.name, (st) => {
        stages.push(st.stage);
        if (st.response) resolve(st);
      });
    });
    const st = await finished;
    assert.equal(st.response?.result?.exitCode, 0);
    assert.equal(tasks.length, 1);
    assert.equal(tasks[0]!.operationName, op.name);
    assert.ok(stages.includes(ExecutionStage_Value.EXECUTING), `stages seen: ${stages}`);
    assert.equal(stages.at(-1), ExecutionStage_Value.COMPLETED);
    // b counts once its finishing statement has returned; a may hear of the commit (NOTIFY) a moment before that.
    for (let i = 0; i < 100 && b.stats().completed === 0; i++) await new Promise((r) => setTimeout(r, 20));
    assert.equal(b.stats().completed, 1);
    // A scheduler that never saw it answers for it too.
    const c = await scheduler(url, 'c');
    assert.equal((await c.get(op.name))?.response?.result?.exitCode, 0);
    assert.deepEqual(await c.owners(op.name), [OWNER]);
  });

  it('merges identical actions submitted to two schedulers at once into one execution, but never do_not_cache ones', async () => {
    const url = freshDatabase();
    const a = await scheduler(url, 'a');
    const b = await scheduler(url, 'b');
    const log: string[] = [];
    const ops = await Promise.all([a.submit(submitReq(7), 'alice'), b.submit(submitReq(7), 'bob'), a.submit(submitReq(7), 'carol')]);
    assert.equal(new Set(ops.map((o) => o.name)).size, 1, 'one operation');
    // The executor comes after the three submissions: with it there first, a
    // loaded machine could finish the action before the last one arrives, and
    // a finished action is rightly no longer merged into.
    a.addExecutor(slot('a-exec', systemClock, { log, workMs: 50 }));
    await done(b, ops[0]!.name);
    assert.equal(log.length, 1, 'executed once');
    assert.deepEqual(await a.owners(ops[0]!.name), ['alice', 'bob', 'carol']);

    const uncached = await Promise.all([
      a.submit(submitReq(8, [], 0, { doNotCache: true }), OWNER),
      b.submit(submitReq(8, [], 0, { doNotCache: true }), OWNER),
    ]);
    assert.notEqual(uncached[0]!.name, uncached[1]!.name);
    await Promise.all(uncached.map((o) => done(a, o.name)));
    assert.equal(log.length, 3);
  });

  it("gives a queued action an executor between a build's runs instead of after all of them", async () => {
    const url = freshDatabase();
    const a = await scheduler(url, 'a');
    // The executor logs the action as it starts it; the runs log as they get the executor.
    const events: string[] = [];
    a.addExecutor({ ...slot('a/0', systemClock, { log: events, workMs: 50 }), run: async () => assert.fail('the test only holds executors') });
    const never = new AbortController().signal;
    const first = await a.acquire([], 'runs/build-0', 'build', never);
    const runs = [1, 2, 3, 4, 5].map((i) =>
      a.acquire([], `runs/build-${i}`, 'build', never).then((h) => {
        events.push(`run ${i}`);
        // Held a while, as a short command would: the action's notification has time to arrive.
        setTimeout(() => h.release(), 300);
      }),
    );
    const op = await a.submit(submitReq(11), 'other');
    const finished = done(a, op.name);
    first.release();
    await Promise.all([...runs, finished]);
    const action = events.findIndex((e) => e.startsWith('a/0:'));
    assert.ok(action >= 0 && action <= 1, `the action waited for ${action} of the build's 5 runs: ${events.join(', ')}`);
    assert.deepEqual(
      events.filter((e) => e.startsWith('run')),
      ['run 1', 'run 2', 'run 3', 'run 4', 'run 5'],
    );
  });

  it('keeps priorities across schedulers: a lower value runs first', async () => {
    const url = freshDatabase();
    const a = await scheduler(url, 'a');
    const b = await scheduler(url, 'b');
    const log: string[] = [];
    const names = [];
    for (const [i, priority] of [
      [1, 5],
      [2, 1],
      [3, -2],
    ] as const)
      names.push((await (i % 2 ? a : b).submit(submitReq(i, [], priority), OWNER)).name);
    b.addExecutor(slot('only', systemClock, { log, workMs: 10 }));
    await Promise.all(names.map((n) => done(a, n)));
    assert.deepEqual(
      log.map((l) => l.split(':')[1]),
      [3, 2, 1].map((i) => submitReq(i).actionDigest.hash.slice(0, 8)),
    );
  });

  it("takes back the leases of a scheduler whose heartbeat expired, and drops that scheduler's late result", async () => {
    const url = freshDatabase();
    const a = await scheduler(url, 'a');
    const op = await a.submit(submitReq(3), OWNER);
    // A scheduler that claims the action and then goes silent, as one killed mid-execution would.
    const ghost = await PgState.open(url, silentLogger());
    try {
      await ghost.heartbeat('ghost', 'ghost', 300, { workers: 0, executors: 1, busy: 1, capabilities: [caps()] });
      const [claimed] = await ghost.claim(
        'ghost',
        [caps()],
        () => true,
        10,
        () => 'ghost-lease',
      );
      assert.equal(claimed?.name, op.name);
      assert.equal((await a.get(op.name))?.stage, ExecutionStage_Value.EXECUTING);
      const tasks: ExecutionTask[] = [];
      a.addExecutor(slot('a-exec', systemClock, { tasks, workMs: 10 }));
      const st = await done(a, op.name);
      assert.equal(st.response?.result?.exitCode, 0);
      assert.equal(tasks.length, 1, 'executed again once the ghost expired');
      const late = ExecuteResponse.encode(ExecuteResponse.fromPartial({ result: { exitCode: 9 } })).finish();
      assert.equal(await ghost.finish(op.name, 'ghost-lease', late), false, 'the expired lease records nothing');
      assert.equal((await a.get(op.name))?.response?.result?.exitCode, 0);
    } finally {
      await ghost.close();
    }
  });

  it('cancels, from any scheduler, an action executing on another', async () => {
    const url = freshDatabase();
    const a = await scheduler(url, 'a');
    const b = await scheduler(url, 'b');
    let started!: () => void;
    const running = new Promise<void>((r) => (started = r));
    const stubborn: ExecutorSlot = {
      id: 'stubborn',
      caps: caps(),
      owner: BUILT_IN,
      execute: (_task, signal) =>
        new Promise((resolve) => {
          started();
          signal.addEventListener('abort', () => resolve(ok()));
        }),
    };
    b.addExecutor(stubborn);
    const op = await a.submit(submitReq(4), OWNER);
    await running;
    assert.equal(await a.cancel(op.name), true);
    const st = await done(a, op.name);
    assert.equal(st.response?.status?.code, 1, 'CANCELLED');
    assert.equal(await a.cancel(op.name), false, 'already done');
    // A queued one (no executor can take it) is finished at once by whoever cancels it.
    const waiting = await b.submit(submitReq(5, [{ name: 'pool', value: 'none' }]), OWNER);
    assert.equal(await b.cancel(waiting.name), true);
    assert.equal((await a.get(waiting.name))?.response?.status?.code, 1);
  });

  it("counts the shared queue per pool on its heartbeat, every scheduler's submissions included", async () => {
    const url = freshDatabase();
    // A short expiry: a beat every 100 ms.
    const a = await scheduler(url, 'a', 500);
    const b = await scheduler(url, 'b', 500);
    const t0 = Date.now() - 1;
    for (let i = 0; i < 3; i++) await b.submit(submitReq(20 + i, [{ name: 'pool', value: 'gpu' }]), OWNER);
    for (let i = 0; i < 2; i++) await a.submit(submitReq(30 + i, [{ name: 'OSFamily', value: 'linux' }]), OWNER);
    const pools: PoolLabels[] = [{ properties: { OSFamily: ['linux'] } }, { properties: { OSFamily: ['linux'], pool: ['gpu'] } }];
    const deadline = Date.now() + 10_000;
    while (a.queueDepth < 5 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    const [linux, gpu] = a.poolLoad(pools, t0);
    assert.equal(linux!.queued, 2);
    assert.equal(gpu!.queued, 3, 'the waiting rows of the other scheduler count');
    assert.equal(linux!.arrived, 2, "arrivals are this scheduler's own submissions");
    assert.equal(gpu!.arrived, 0);
    assert.equal(a.queueDepth, 5);
  });

  it('lists and deletes operations of any scheduler, by instance and owner', async () => {
    const url = freshDatabase();
    const a = await scheduler(url, 'a');
    const b = await scheduler(url, 'b');
    const hit = await a.recordCompleted('', submitReq(9).actionDigest, ok(), 'alice');
    assert.deepEqual(
      (await b.list('', '', 10)).map((o) => o.name),
      [hit.name],
    );
    assert.deepEqual(await b.list('', '', 10, 'bob'), []);
    assert.equal(await b.delete(hit.name), true);
    assert.equal(await a.get(hit.name), undefined);
    const peers = await a.peers();
    assert.deepEqual(peers.map((p) => p.address).sort(), ['a', 'b']);
    assert.equal(peers.find((p) => p.address === 'a')?.self, true);
  });

  it('refuses a database it cannot reach with UNAVAILABLE naming it, without the password', async () => {
    await assert.rejects(
      SharedScheduler.open({
        url: 'postgres://repr:hunter2@127.0.0.1:1/nowhere',
        address: () => 'x',
        cas: new MemoryBlobStore(1),
        actionCache: new ActionCache(new MemoryBlobStore(1), new MemoryBlobStore(1)),
        log: silentLogger(),
      }),
      (e: Error & { code?: number }) => {
        assert.equal(e.code, 14);
        assert.match(e.message, /127\.0\.0\.1:1\/nowhere/);
        assert.doesNotMatch(e.message, /hunter2/);
        return true;
      },
    );
  });
});
