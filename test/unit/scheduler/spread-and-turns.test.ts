import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ManualClock } from '../../../src/common/clock.js';
import type { ExecutorSlot, HeldExecutor } from '../../../src/executor/executor-slot.js';
import { ExecutorPool, workerOf } from '../../../src/scheduler/executor-pool.js';
import { advanceUntil, finished, harness, slot, submitReq } from './harness.js';

/** An executor that can also be held for a `repr run`; holding it runs nothing here. */
function runSlot(id: string, clock: ManualClock, o: Parameters<typeof slot>[2] = {}): ExecutorSlot {
  return { ...slot(id, clock, o), run: async () => assert.fail('the test only holds executors') };
}

/** Workers w1..wN with `each` executors, registered worker by worker as workers connect. */
function farm(clock: ManualClock, workers: number, each: number, o: Parameters<typeof slot>[2] = {}): ExecutorSlot[] {
  const slots: ExecutorSlot[] = [];
  for (let w = 1; w <= workers; w++) for (let i = 0; i < each; i++) slots.push(runSlot(`w${w}/${i}`, clock, o));
  return slots;
}

const never = () => new AbortController().signal;

function perWorker(held: readonly HeldExecutor[]): Map<string, number> {
  const m = new Map<string, number>();
  for (const h of held) m.set(workerOf(h.slot), (m.get(workerOf(h.slot)) ?? 0) + 1);
  return m;
}

describe('spreading work over workers', () => {
  it('gives concurrent runs executors on every worker, not the first worker registered', async () => {
    const { scheduler: s, clock } = harness();
    for (const e of farm(clock, 3, 4)) s.addExecutor(e);
    const held = await Promise.all([1, 2, 3, 4, 5, 6].map((i) => s.acquire([], `runs/r${i}`, 'build', never())));
    assert.deepEqual([...perWorker(held)].sort(), [
      ['w1', 2],
      ['w2', 2],
      ['w3', 2],
    ]);
    for (const h of held) h.release();
    await s.close();
  });

  it('rotates consecutive runs over equally idle workers', async () => {
    const { scheduler: s, clock } = harness();
    for (const e of farm(clock, 3, 2)) s.addExecutor(e);
    const order: string[] = [];
    for (let i = 0; i < 6; i++) {
      const h = await s.acquire([], `runs/r${i}`, 'build', never());
      order.push(workerOf(h.slot));
      h.release();
    }
    assert.deepEqual(order, ['w1', 'w2', 'w3', 'w1', 'w2', 'w3']);
    await s.close();
  });

  it('puts a run on the worker with the smallest share of busy executors', async () => {
    const { scheduler: s, clock } = harness();
    // w1 has 4 executors with 2 busy (half), w2 has 1 with 0 busy: w2 first, then w1 (half) over w2 (full).
    for (const e of [...farm(clock, 1, 4), runSlot('w2/0', clock)]) s.addExecutor(e);
    const first = await Promise.all([s.acquire([], 'runs/a', 'build', never()), s.acquire([], 'runs/b', 'build', never())]);
    assert.deepEqual(first.map((h) => workerOf(h.slot)).sort(), ['w1', 'w2'], 'the first two went to both workers');
    const third = await s.acquire([], 'runs/c', 'build', never());
    assert.equal(workerOf(third.slot), 'w1', 'w2 is full, w1 is a quarter busy');
    await s.close();
  });

  it('spreads queued actions over the workers too', async () => {
    const { scheduler: s, clock } = harness();
    const log: string[] = [];
    for (const e of farm(clock, 3, 4, { log, workMs: 100 })) s.addExecutor(e);
    const names = [];
    for (let i = 0; i < 3; i++) names.push((await s.submit(submitReq(i), 'build')).name);
    await advanceUntil(clock, finished(s, names).all);
    assert.deepEqual(log.map((l) => l.split('/')[0]).sort(), ['w1', 'w2', 'w3']);
    await s.close();
  });

  it('orders executors offered at once so that a claim filling them in order spreads', () => {
    const clock = new ManualClock(0);
    const pool = new ExecutorPool(clock, 0);
    const slots = farm(clock, 3, 2);
    for (const e of slots) pool.add(e);
    pool.claim(slots[0]!, { operationName: 'busy' });
    // w1 is half busy: the idle w2 and w3 come first, then alternate.
    assert.deepEqual(
      pool.spread(pool.idle).map((e) => e.id),
      ['w2/0', 'w3/0', 'w1/1', 'w2/1', 'w3/1'],
    );
  });
});

describe('turns between owners', () => {
  it("serves another user's run before the rest of a build's burst of runs", async () => {
    const { scheduler: s, clock } = harness();
    s.addExecutor(runSlot('w1/0', clock));
    const first = await s.acquire([], 'runs/build-0', 'build', never());
    const got: string[] = [];
    const waiting: Promise<HeldExecutor>[] = [];
    const take = (label: string, owner: string) =>
      waiting.push(
        s.acquire([], label, owner, never()).then((h) => {
          got.push(label);
          return h;
        }),
      );
    for (let i = 1; i <= 20; i++) take(`runs/build-${i}`, 'build');
    take('runs/other', 'someone-else');
    // Each holder lets go as soon as it has the executor: the line empties in the order it is served.
    for (const p of waiting) void p.then((h) => setImmediate(() => h.release()));
    first.release();
    await advanceUntil(clock, () => got.length === 21);
    assert.equal(got[0], 'runs/other', 'the other user went next');
    assert.deepEqual(
      got.slice(1),
      Array.from({ length: 20 }, (_, i) => `runs/build-${i + 1}`),
      "the build's own runs kept their order",
    );
    await s.close();
  });

  it("serves another user's action before the rest of a build's burst of runs", async () => {
    const { scheduler: s, clock } = harness();
    // The executor logs `w1/0:<digest>` as it starts the action; the runs log as they get the executor.
    const events: string[] = [];
    s.addExecutor(runSlot('w1/0', clock, { log: events, workMs: 10 }));
    const first = await s.acquire([], 'runs/build-0', 'build', never());
    for (let i = 1; i <= 20; i++)
      void s.acquire([], `runs/build-${i}`, 'build', never()).then((h) => {
        events.push(`run ${i}`);
        setImmediate(() => h.release());
      });
    const op = await s.submit(submitReq(7), 'someone-else');
    const done = finished(s, [op.name]);
    first.release();
    await advanceUntil(clock, () => done.all() && events.length === 21);
    assert.equal(events[0], `w1/0:${submitReq(7).actionDigest.hash.slice(0, 8)}`, 'the action went next');
    assert.equal(events[1], 'run 1');
    await s.close();
  });

  it("interleaves two owners' actions at one priority, and priority still goes first", async () => {
    const { scheduler: s, clock } = harness();
    const log: string[] = [];
    const names: string[] = [];
    const submit = async (i: number, owner: string, priority = 0) => names.push((await s.submit(submitReq(i, [], priority), owner)).name);
    for (let i = 0; i < 4; i++) await submit(i, 'build');
    await submit(10, 'other');
    await submit(11, 'other');
    await submit(20, 'late', 5);
    await submit(30, 'urgent', -1);
    // The executor arrives after everything is queued, so the whole line is there to choose from.
    s.addExecutor(slot('w1/0', clock, { log }));
    await advanceUntil(clock, finished(s, names).all);
    const digest = (i: number) => submitReq(i).actionDigest.hash.slice(0, 8);
    assert.deepEqual(
      log.map((l) => l.split(':')[1]),
      [30, 0, 10, 1, 11, 2, 3, 20].map(digest),
    );
    await s.close();
  });
});
