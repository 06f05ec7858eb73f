import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Code, ReprError } from '../../../src/common/errors.js';
import type { ExecutionTask } from '../../../src/executor/execution-task.js';
import { BUILT_IN, ExecutorLostError, type ExecutorSlot } from '../../../src/executor/executor-slot.js';
import { ExecuteResponse, ExecutionStage_Value } from '../../../src/proto/build/bazel/remote/execution/v2/remote_execution.js';
import { actionDigest, advanceUntil, caps, finished, flush, harness, slot, submitReq, OWNER } from './harness.js';

describe('Scheduler', () => {
  it('executes property-constrained actions only on executors that have the properties', async () => {
    const { scheduler: s, clock } = harness();
    const log: string[] = [];
    s.addExecutor(slot('small', clock, { properties: { OSFamily: ['linux'], pool: ['small'] }, log }));
    s.addExecutor(slot('big', clock, { properties: { OSFamily: ['linux'], pool: ['big'] }, log }));
    const names = [];
    for (let i = 0; i < 10; i++) names.push((await s.submit(submitReq(i, [{ name: 'pool', value: 'big' }]), OWNER)).name);
    for (let i = 10; i < 14; i++) names.push((await s.submit(submitReq(i, [{ name: 'OSFamily', value: 'linux' }]), OWNER)).name);
    await advanceUntil(clock, finished(s, names).all);
    const bigOnly = log.filter((l) => l.startsWith('small')).map((l) => l.split(':')[1]);
    for (let i = 0; i < 10; i++) assert.ok(!bigOnly.includes(actionDigest(i).hash.slice(0, 8)), 'pool=big never executed on small');
    assert.equal(log.length, 14);
    assert.deepEqual(s.unsatisfiable([{ name: 'pool', value: 'huge' }]), ['pool=huge']);
    assert.equal(s.unsatisfiable([{ name: 'pool', value: 'small' }]), undefined);
    s.close();
  });

  it('executes an identical in-flight action once for every caller', async () => {
    const { scheduler: s, clock } = harness();
    const log: string[] = [];
    s.addExecutor(slot('e', clock, { log, workMs: 100 }));
    const a = await s.submit(submitReq(1), OWNER);
    const b = await s.submit(submitReq(1), OWNER);
    assert.equal(a.name, b.name);
    await advanceUntil(clock, finished(s, [a.name]).all);
    assert.equal(log.length, 1);
    const c = await s.submit(submitReq(1), OWNER);
    assert.notEqual(c.name, a.name, 'once finished, the same action executes again if asked');
    s.close();
  });

  it('starts lower priority values first', async () => {
    const { scheduler: s, clock } = harness();
    const log: string[] = [];
    const names = [
      (await s.submit(submitReq(1, [], 5), OWNER)).name,
      (await s.submit(submitReq(2, [], -5), OWNER)).name,
      (await s.submit(submitReq(3, [], 0), OWNER)).name,
    ];
    s.addExecutor(slot('e', clock, { log, workMs: 1 }));
    await advanceUntil(clock, finished(s, names).all);
    assert.deepEqual(
      log,
      [2, 3, 1].map((i) => `e:${actionDigest(i).hash.slice(0, 8)}`),
    );
    s.close();
  });

  it('cancels a queued operation without executing it', async () => {
    const { scheduler: s, clock } = harness();
    const queued = await s.submit(submitReq(9), OWNER);
    assert.equal(await s.cancel(queued.name), true);
    assert.equal((await s.get(queued.name))!.response!.status!.code, 1);
    const log: string[] = [];
    // Dispatching is synchronous: an executor given the action would have logged it by now.
    s.addExecutor(slot('e', clock, { log }));
    clock.advance(1000);
    await flush();
    assert.deepEqual(log, []);
    assert.equal(s.busyExecutors, 0);
    s.close();
  });

  it('stamps queuedAt and the start of an assignment from its clock', async () => {
    const { scheduler: s, clock } = harness();
    const tasks: ExecutionTask[] = [];
    s.addExecutor(slot('e', clock, { tasks, workMs: 5000 }));
    const queuedAt = clock.now();
    const ahead = await s.submit(submitReq(0), OWNER);
    const op = await s.submit(submitReq(1), OWNER);
    assert.equal((await s.get(op.name))!.stage, ExecutionStage_Value.QUEUED);
    clock.advance(5000);
    await flush();
    assert.equal((await s.get(ahead.name))!.response?.status?.code, 0);
    assert.equal((await s.get(op.name))!.stage, ExecutionStage_Value.EXECUTING);
    assert.equal(tasks[1]!.operationName, op.name);
    assert.equal(tasks[1]!.queuedAt.getTime(), queuedAt);
    const a = s.assignments().get('e')!;
    assert.equal(a.operationName, op.name);
    assert.equal(a.started.getTime(), queuedAt + 5000);
    await advanceUntil(clock, finished(s, [op.name]).all);
    assert.equal(s.assignments().size, 0);
    assert.equal(s.completedByExecutor().get('e'), 2);
    s.close();
  });

  it('re-queues an action whose executor is lost, and gives up after maxAttempts', async () => {
    const { scheduler: s, clock } = harness({ maxAttempts: 3 });
    let attempts = 0;
    const losing: ExecutorSlot = {
      id: 'flaky',
      caps: caps(),
      owner: BUILT_IN,
      execute: async () => {
        attempts++;
        throw new ExecutorLostError(`worker flaky lost (attempt ${attempts})`);
      },
    };
    s.addExecutor(losing);
    const op = await s.submit(submitReq(1), OWNER);
    const done = finished(s, [op.name]);
    await advanceUntil(clock, done.all);
    assert.equal(attempts, 3);
    assert.equal(s.stats().requeued, 2);
    const status = done.states.get(op.name)!.response!.status!;
    assert.equal(status.code, Code.UNAVAILABLE);
    assert.match(status.message, /gave up after 3 executors were lost executing it; last: worker flaky lost \(attempt 3\)/);
    s.close();
  });

  it('puts a re-queued action back at its place in line, and it goes to another executor', async () => {
    const { scheduler: s, clock } = harness();
    const log: string[] = [];
    const flaky: ExecutorSlot = {
      id: 'flaky',
      caps: caps(),
      owner: BUILT_IN,
      execute: async () => {
        // The worker left: it gets no more work.
        s.removeExecutor(flaky);
        throw new ExecutorLostError('worker flaky lost');
      },
    };
    s.addExecutor(flaky);
    const submitted = [s.submit(submitReq(1), OWNER)];
    // The loss is seen only once this synchronous part is over: by then 2 executes and 3 waits.
    s.addExecutor(slot('steady', clock, { log, workMs: 10 }));
    submitted.push(s.submit(submitReq(2), OWNER), s.submit(submitReq(3), OWNER));
    const names = (await Promise.all(submitted)).map((op) => op.name);
    await advanceUntil(clock, finished(s, names).all);
    assert.deepEqual(
      log,
      [2, 1, 3].map((i) => `steady:${actionDigest(i).hash.slice(0, 8)}`),
      'the lost action goes ahead of the one that arrived after it',
    );
    assert.equal(s.stats().requeued, 1);
    assert.equal(s.stats().completed, 3);
    assert.equal(s.completedByExecutor().get('flaky'), undefined, 'a lost execution is not credited');
    s.close();
  });

  it('turns an executor failure into the status of the operation, naming the executor', async () => {
    const { scheduler: s, clock } = harness();
    s.addExecutor({
      id: 'e',
      caps: caps(),
      owner: BUILT_IN,
      execute: async () => {
        throw new ReprError(Code.FAILED_PRECONDITION, 'action wrote 17 GiB: at most 16 GiB');
      },
    });
    const op = await s.submit(submitReq(1), OWNER);
    const done = finished(s, [op.name]);
    await advanceUntil(clock, done.all);
    const status = done.states.get(op.name)!.response!.status!;
    assert.equal(status.code, Code.FAILED_PRECONDITION);
    assert.equal(status.message, 'executor e: action wrote 17 GiB: at most 16 GiB');
    s.close();
  });

  it('writes successful results to the action cache, and neither failures nor do_not_cache actions', async () => {
    const { scheduler: s, clock, actionCache } = harness();
    s.addExecutor(
      slot('e', clock, { respond: (t) => ExecuteResponse.fromPartial({ result: { exitCode: t.actionDigest.hash === actionDigest(2).hash ? 3 : 0 } }) }),
    );
    const names = [
      (await s.submit(submitReq(1), OWNER)).name,
      (await s.submit(submitReq(2), OWNER)).name,
      (await s.submit(submitReq(3, [], 0, { doNotCache: true }), OWNER)).name,
    ];
    await advanceUntil(clock, finished(s, names).all);
    assert.equal((await actionCache.find('', actionDigest(1)))?.exitCode, 0);
    assert.equal(await actionCache.find('', actionDigest(2)), undefined, 'a non-zero exit is not cached');
    assert.equal(await actionCache.find('', actionDigest(3)), undefined, 'do_not_cache is not cached');
    s.close();
  });
});

describe('Scheduler and departed executors', () => {
  const gpu = [{ name: 'pool', value: 'gpu' }];
  const graceMs = 60_000;

  it('keeps counting a departed executor for the grace period, and lets it take the action on its return', async () => {
    const { scheduler: s, clock } = harness({ departedGraceMs: graceMs });
    const log: string[] = [];
    const worker = slot('gpu/0', clock, { properties: { pool: ['gpu'] }, log });
    s.addExecutor(worker);
    s.removeExecutor(worker);
    assert.equal(s.unsatisfiable(gpu), undefined, 'it may come back');
    const op = await s.submit(submitReq(1, gpu), OWNER);
    clock.advance(graceMs - 1000);
    await flush();
    assert.equal((await s.get(op.name))!.response, undefined, 'still waiting within the grace period');
    const back = slot('gpu/0', clock, { properties: { pool: ['gpu'] }, log });
    s.addExecutor(back);
    const done = finished(s, [op.name]);
    await advanceUntil(clock, done.all);
    assert.equal(done.states.get(op.name)!.response!.status?.code ?? 0, Code.OK);
    assert.equal(log.length, 1);
    s.close();
  });

  it('fails what only a departed executor could take once its grace is over', async () => {
    const { scheduler: s, clock } = harness({ departedGraceMs: graceMs });
    const worker: ExecutorSlot = { ...slot('gpu/0', clock, { properties: { pool: ['gpu'] } }), run: async () => assert.fail('never held') };
    s.addExecutor(slot('cpu/0', clock));
    s.addExecutor(worker);
    s.removeExecutor(worker);
    const op = await s.submit(submitReq(1, gpu), OWNER);
    const done = finished(s, [op.name]);
    const run = s.acquire(gpu, 'runs/r1', OWNER, new AbortController().signal);
    const runFailed = run.then(
      () => assert.fail('no executor to hold'),
      (e: ReprError) => e,
    );
    clock.advance(graceMs - 1);
    await flush();
    assert.equal(done.all(), false);
    await advanceUntil(clock, done.all, 100);
    assert.ok(clock.now() - Date.parse('2024-01-01T00:00:00Z') <= graceMs + 1000, 'failed within a sweep of the grace ending');
    const status = done.states.get(op.name)!.response!.status!;
    assert.equal(status.code, Code.FAILED_PRECONDITION);
    assert.match(status.message, /no executor can execute this action any more; unmet platform properties: pool=gpu/);
    const e = await runFailed;
    assert.equal(e.code, Code.FAILED_PRECONDITION);
    assert.match(e.message, /no executor can run this command any more/);
    assert.deepEqual(s.unsatisfiable(gpu), ['pool=gpu']);
    s.close();
  });
});
