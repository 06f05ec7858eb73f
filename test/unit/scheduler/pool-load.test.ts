import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { advanceUntil, finished, flush, harness, OWNER, slot, submitReq } from './harness.js';

const linux = { properties: { OSFamily: ['linux'] } };
const big = { properties: { OSFamily: ['linux'], pool: ['big'] } };

describe('Scheduler.poolLoad', () => {
  it('counts queue, executors, arrivals and completions toward one pool each, whatever the order pools are listed in', async () => {
    const { scheduler: s, clock } = harness();
    const t0 = clock.now();
    clock.advance(1); // `since` is exclusive
    s.addExecutor(slot('big-0', clock, { properties: big.properties, workMs: 2000 }));
    s.addExecutor(slot('small-0', clock, { properties: linux.properties, workMs: 1000 }));
    s.addExecutor(slot('small-1', clock, { properties: linux.properties, workMs: 1000 }));
    const names: string[] = [];
    // Three need pool=big; five need only linux, which the big pool would take too: they count toward the general pool.
    for (let i = 0; i < 3; i++) names.push((await s.submit(submitReq(i, [{ name: 'pool', value: 'big' }]), OWNER)).name);
    for (let i = 3; i < 8; i++) names.push((await s.submit(submitReq(i, [{ name: 'OSFamily', value: 'linux' }]), OWNER)).name);
    await flush();
    const pools = [big, linux];
    const [b, l] = s.poolLoad(pools, t0);
    assert.deepEqual(b, { queued: 2, busy: 1, executors: 1, arrived: 3, completed: 0, executionMs: 0 });
    assert.deepEqual(l, { queued: 3, busy: 2, executors: 2, arrived: 5, completed: 0, executionMs: 0 });

    const [l2, b2] = s.poolLoad([linux, big], t0);
    assert.deepEqual(l2, l, 'the big executor declares OSFamily=linux too, yet counts toward the big pool only');
    assert.deepEqual(b2, b);

    const mid = clock.now();
    await advanceUntil(clock, finished(s, names).all, 100);
    const [b3, l3] = s.poolLoad(pools, mid);
    assert.equal(b3!.completed, 3);
    assert.equal(b3!.executionMs, 3 * 2000);
    assert.equal(l3!.completed, 5);
    assert.equal(l3!.executionMs, 5 * 1000);
    assert.equal(l3!.arrived, 0, 'nothing arrived after the second look');
    assert.equal(l3!.queued + b3!.queued + l3!.busy + b3!.busy, 0);
    s.close();
  });

  it('leaves out executors taken out of rotation and actions no pool takes', async () => {
    const { scheduler: s, clock } = harness();
    const t0 = clock.now();
    clock.advance(1);
    const gone = slot('gone', clock, linux);
    s.addExecutor(gone);
    s.removeExecutor(gone);
    await s.submit(submitReq(1, [{ name: 'pool', value: 'gpu' }]), OWNER);
    const [l] = s.poolLoad([linux], t0);
    assert.deepEqual(l, { queued: 0, busy: 0, executors: 0, arrived: 0, completed: 0, executionMs: 0 });
    s.close();
  });
});
