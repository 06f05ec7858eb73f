import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { PolicyConfig } from '../../../src/autoscale/autoscale.js';
import { defaultPolicy, FAR_BELOW_STEP } from '../../../src/autoscale/policy.js';
import { type Arrival, arrivalsOf, type SimOptions, simulate } from '../../../src/autoscale/simulator.js';
import { oscillating, TRACES } from '../../../src/autoscale/traces.js';
import { Code, codeOf } from '../../../src/common/errors.js';

const pool: PolicyConfig = { ...defaultPolicy, maxWorkers: 20 };
const cloud = (policy: PolicyConfig): SimOptions => ({ policy, startupSeconds: 20, tickSeconds: 5 });
const MODES = [
  { ...pool, mode: 'static', minWorkers: 20 },
  { ...pool, mode: 'reactive' },
  { ...pool, mode: 'predictive' },
] satisfies PolicyConfig[];

describe('simulate', () => {
  it('is deterministic: the same trace and policy give the same result; another seed another trace', () => {
    const trace = TRACES[0]();
    assert.deepEqual(simulate(trace, cloud(pool)), simulate(trace, cloud(pool)));
    assert.deepEqual(arrivalsOf(trace), arrivalsOf(TRACES[0]()));
    assert.notDeepEqual(arrivalsOf(trace).slice(0, 20), arrivalsOf(TRACES[0](17)).slice(0, 20));
  });

  for (const make of TRACES) {
    it(`loses no action of the ${make().name} trace under any policy: every arrival starts once and completes`, () => {
      const trace = make();
      const arrived = arrivalsOf(trace).length;
      assert.ok(arrived > 500, `${trace.name} has ${arrived} actions`);
      for (const policy of MODES) {
        const r = simulate(trace, cloud(policy));
        assert.equal(r.arrived, arrived, policy.mode);
        assert.equal(r.completed, arrived, policy.mode);
        assert.ok(r.wait.p50 <= r.wait.p95 && r.wait.p95 <= r.wait.max && r.wait.p50 >= 0, policy.mode);
        assert.ok(
          r.series.every((p) => p.workers >= policy.minWorkers && p.workers <= policy.maxWorkers),
          policy.mode,
        );
      }
    });
  }

  it('waits for workers to start, queues FIFO, and counts worker-seconds by hand', () => {
    // One executor a worker, up to 3 workers, starting 20 s after they are asked for.
    // Five 100 s actions at 0.5 s: one runs at once; the tick at 5 s sees load 5 on 1 executor and asks for
    // ceil(5 / 0.6) = 9, clamped to 3; those two start at 25 s (waits 24.5 s); the last two wait for the
    // first worker to free at 100.5 s and the second at 125 s, and end at 200.5 s and 225 s.
    const five: Arrival[] = Array.from({ length: 5 }, () => ({ at: 0.5, seconds: 100 }));
    const r = simulate(five, { policy: { ...pool, mode: 'reactive', executorsPerWorker: 1, maxWorkers: 3 }, startupSeconds: 20, tickSeconds: 5 });
    assert.equal(r.completed, 5);
    assert.deepEqual(r.wait, { p50: 24.5, p95: 124.5, max: 124.5 });
    assert.deepEqual(
      r.scaleEvents.map((e) => [e.t, e.from, e.to]),
      [
        [5, 1, 3],
        // Busy 2 of 3 executors, then 1 (0.33): held until all are idle at 225 s; then one step.
        [225, 3, 2],
      ],
    );
    assert.equal(r.endSeconds, 225);
    assert.equal(r.workerSeconds, 1 * 5 + 3 * 220);
  });

  it('removes idle workers only: a worker running an action stays however far the policy wants to shrink', () => {
    // 4 executors a worker. At 0.1 s four 1000 s actions fill the first worker, and four more queue: three
    // of 1 s and one of 2000 s. The pool grows to 3; at 25 s the second worker takes the four queued ones.
    // At 1000.1 s only the 2000 s action runs, on the second worker: 1 of 12 executors, need 1. A step of
    // 2 removes the other two (idle), not it.
    const arrivals: Arrival[] = [
      ...Array.from({ length: 4 }, () => ({ at: 0.1, seconds: 1000 })),
      { at: 0.1, seconds: 2000 },
      ...Array.from({ length: 3 }, () => ({ at: 0.1, seconds: 1 })),
    ];
    const policy: PolicyConfig = { ...pool, mode: 'reactive', maxWorkers: 3, maxScaleDownStep: 2 };
    const r = simulate(arrivals, { policy, startupSeconds: 20, tickSeconds: 5 });
    assert.deepEqual(
      r.scaleEvents.map((e) => [e.t, e.from, e.to]),
      [
        [5, 1, 3],
        [1005, 3, 1],
      ],
    );
    assert.equal(r.completed, 8);
    assert.equal(r.endSeconds, 2025);
  });

  it('refuses a policy that never gives queued actions a worker instead of running forever', () => {
    assert.throws(
      () => simulate([{ at: 1, seconds: 1 }], { policy: { ...pool, mode: 'static', minWorkers: 0 }, startupSeconds: 0, tickSeconds: 3600 }),
      (e: unknown) => codeOf(e) === Code.FAILED_PRECONDITION && /1 actions still queued/.test((e as Error).message),
    );
  });
});

describe('an oscillating load does not make the pool flap', () => {
  /**
   * What the cooldowns allow over `seconds`: a scale-down needs the down cooldown since any change, so
   * at most ⌊L/down⌋+1 of them; a scale-up needs the up cooldown since the last one, and adds at least a
   * worker, which only the max and the scale-downs' removals (a predictive one's doubled when far below)
   * leave room for.
   */
  function bound(p: PolicyConfig, seconds: number): number {
    const downs = Math.floor(seconds / p.scaleDownCooldownSeconds) + 1;
    const step = p.maxScaleDownStep * (p.mode === 'predictive' ? FAR_BELOW_STEP : 1);
    const ups = Math.min(Math.floor(seconds / p.scaleUpCooldownSeconds) + 1, p.maxWorkers - 1 + downs * step);
    return downs + ups;
  }

  // A 40 s square wave: 20 s at 3 actions/s, 20 s at none; faster than either cooldown.
  const trace = oscillating(16, 40);

  for (const mode of ['reactive', 'predictive'] as const) {
    it(`${mode}: scale events stay within what the cooldowns allow`, () => {
      const policy: PolicyConfig = { ...pool, mode };
      const r = simulate(trace, cloud(policy));
      const allowed = bound(policy, r.endSeconds);
      assert.equal(allowed, 16 + (mode === 'predictive' ? 51 : 35));
      assert.ok(r.scaleEvents.length <= allowed, `${r.scaleEvents.length} scale events > ${allowed}`);
      // The same policy without cooldowns follows every swing: the bound is one a flapping pool breaks.
      const flapping = simulate(trace, cloud({ ...policy, scaleUpCooldownSeconds: 0, scaleDownCooldownSeconds: 0 }));
      assert.ok(flapping.scaleEvents.length > allowed, `without cooldowns only ${flapping.scaleEvents.length} scale events`);
    });
  }
});
