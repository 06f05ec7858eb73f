import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { PolicyConfig, PolicyState, PoolSample } from '../../../src/autoscale/autoscale.js';
import { decide, defaultPolicy, initialPolicyState, isBurst, littleExecutors, meanArrivalRate, trendPerSecond } from '../../../src/autoscale/policy.js';
import { Code, codeOf } from '../../../src/common/errors.js';
import { compilePolicy } from '../../../src/config/autoscale-schema.js';

const T0 = 1_800_000_000_000;
const cfg: PolicyConfig = { ...defaultPolicy, executorsPerWorker: 4 };

function sample(over: Partial<PoolSample>): PoolSample {
  return { at: T0, queued: 0, busy: 0, executors: 4, workers: 1, arrivalRate: 0, completionRate: 0, meanActionSeconds: 0, ...over };
}

/** Feeds loads (busy only) one per `stepSeconds` through decide and returns the last decision. */
function feed(config: PolicyConfig, loads: number[], stepSeconds = 10, workers = 1) {
  let state: PolicyState = initialPolicyState();
  let last: ReturnType<typeof decide> | undefined;
  loads.forEach((busy, i) => {
    last = decide(config, state, sample({ at: T0 + i * stepSeconds * 1000, busy, workers }));
    state = last.state;
  });
  return last!;
}

const close = (actual: number, expected: number) => assert.ok(Math.abs(actual - expected) < 1e-9, `${actual} ≠ ${expected}`);

describe('decide: the seed formulas', () => {
  it('smooths with St = α·Xt + (1−α)·St−1, starting from the first sample', () => {
    // 10; 0.3·20 + 0.7·10 = 13; 0.3·0 + 0.7·13 = 9.1
    let state = initialPolicyState();
    const seen: number[] = [];
    for (const [i, busy] of [10, 20, 0].entries()) {
      const d = decide(cfg, state, sample({ at: T0 + i * 10_000, busy, workers: 10 }));
      seen.push(d.inputs.smoothed);
      state = d.state;
    }
    close(seen[0]!, 10);
    close(seen[1]!, 13);
    close(seen[2]!, 9.1);
  });

  it('counts queued actions as load: executors wanted, not executors busy', () => {
    const d = decide(cfg, initialPolicyState(), sample({ busy: 3, queued: 7 }));
    assert.equal(d.inputs.load, 10);
  });

  it('fits the trend by least squares, per second: rising, falling, flat', () => {
    close(
      trendPerSecond([
        { at: 0, load: 0 },
        { at: 10_000, load: 5 },
        { at: 20_000, load: 10 },
      ]),
      0.5,
    );
    close(
      trendPerSecond([
        { at: 0, load: 10 },
        { at: 10_000, load: 5 },
        { at: 20_000, load: 0 },
      ]),
      -0.5,
    );
    close(
      trendPerSecond([
        { at: 0, load: 4 },
        { at: 10_000, load: 4 },
        { at: 20_000, load: 4 },
      ]),
      0,
    );
    // Not a line: x̄ = 1, ȳ = 2, Σdxdy = 1, Σdx² = 2.
    close(
      trendPerSecond([
        { at: 0, load: 1 },
        { at: 1000, load: 3 },
        { at: 2000, load: 2 },
      ]),
      0.5,
    );
    assert.equal(trendPerSecond([{ at: 5, load: 9 }]), 0);
  });

  it('projects the smoothed load along the trend over the horizon, never below 0', () => {
    // Rising 0, 5, 10: S = 0, 1.5, 4.05; trend +0.5/s; 4.05 + 0.5·30 = 19.05.
    const up = feed(cfg, [0, 5, 10], 10, 10);
    close(up.inputs.trend, 0.5);
    close(up.inputs.predicted, 19.05);
    // Falling 10, 5, 0: S = 10, 8.5, 5.95; 5.95 − 0.5·30 < 0.
    const down = feed(cfg, [10, 5, 0], 10, 10);
    close(down.inputs.trend, -0.5);
    assert.equal(down.inputs.predicted, 0);
  });

  it('keeps only the last trendWindow points for the trend', () => {
    // A fall long ago, then flat at 4 for the whole window: the slope is 0.
    const d = feed({ ...cfg, trendWindow: 3 }, [40, 30, 20, 4, 4, 4], 10, 10);
    assert.deepEqual(
      d.state.history.map((p) => p.load),
      [4, 4, 4],
    );
    assert.equal(d.inputs.trend, 0);
  });

  it("plans with Little's law: λ·W executors plus the queue drained within the horizon, capped at the queue", () => {
    // 2/s × 3 s = 6, plus min(20, 20·3/30 = 2) = 8.
    assert.equal(littleExecutors(sample({ arrivalRate: 2, meanActionSeconds: 3, queued: 20 }), 30), 8);
    // 5 queued 60 s actions cannot use more than 5 executors to drain.
    assert.equal(littleExecutors(sample({ arrivalRate: 0, meanActionSeconds: 60, queued: 5 }), 30), 5);
    assert.equal(littleExecutors(sample({ arrivalRate: 9, meanActionSeconds: 0, queued: 5 }), 30), 0);
    // Little's 8 above a smoothed 1 decides the demand.
    const d = decide(cfg, initialPolicyState(), sample({ busy: 1, arrivalRate: 2, meanActionSeconds: 3, queued: 20, workers: 2 }));
    assert.equal(d.inputs.littleExecutors, 8);
    assert.equal(d.inputs.utilization, 21 / 8);
  });
});

describe('decide: scaling', () => {
  it('scales up aggressively, straight to the need at the target utilization, and says why', () => {
    // Demand 10 on 1×4 executors: utilization 2.5; ceil(10 / (4·0.6)) = 5.
    const d = decide(cfg, initialPolicyState(), sample({ busy: 4, queued: 6, workers: 1 }));
    assert.equal(d.direction, 'up');
    assert.equal(d.desired, 5);
    assert.equal(
      d.reason,
      'up 1→5: utilization 2.50 > 0.75 (demand 10.0 executors: smoothed 10.0, trend +0.00/s, little 0.0); cooldown ok, sized for 10.0 executors',
    );
    assert.equal(d.state.lastScaleUpAt, T0);
  });

  it('refuses a scale-up within the up cooldown, with the time left, and allows it when it has passed', () => {
    const state: PolicyState = { history: [], lastScaleUpAt: T0 - 12_000 };
    const held = decide(cfg, state, sample({ busy: 10, workers: 1 }));
    assert.equal(held.direction, 'hold');
    assert.equal(held.desired, 1);
    assert.match(held.reason, /^hold: scale-up cooldown, 12 s of 30 s \(18 s left\); utilization 2\.50 > 0\.75/);
    assert.equal(held.state.lastScaleUpAt, T0 - 12_000);
    const ok = decide(cfg, { history: [], lastScaleUpAt: T0 - 30_000 }, sample({ busy: 10, workers: 1 }));
    assert.equal(ok.direction, 'up');
  });

  it('refuses a scale-down within the down cooldown since the last change in either direction', () => {
    for (const last of [{ lastScaleUpAt: T0 - 45_000 }, { lastScaleDownAt: T0 - 45_000 }, { lastScaleUpAt: T0 - 45_000, lastScaleDownAt: T0 - 500_000 }]) {
      const d = decide(cfg, { history: [], ...last }, sample({ busy: 0, workers: 5 }));
      assert.equal(d.direction, 'hold', JSON.stringify(last));
      assert.match(d.reason, /^hold: scale-down cooldown, 45 s of 120 s \(75 s left\); forecast utilization 0\.00 < 0\.25/);
    }
    const ok = decide(cfg, { history: [], lastScaleUpAt: T0 - 120_000 }, sample({ busy: 0, workers: 5 }));
    assert.equal(ok.direction, 'down');
    assert.equal(ok.state.lastScaleDownAt, T0);
    assert.equal(ok.state.lastScaleUpAt, T0 - 120_000);
  });

  it('scales down conservatively: at most maxScaleDownStep, never below the need or the min', () => {
    // Demand 3 on 32 executors: 0.09, not far below the threshold (that is the next test).
    const d1 = decide(cfg, initialPolicyState(), sample({ busy: 3, workers: 8 }));
    assert.equal(d1.desired, 7);
    assert.match(d1.reason, /^down 8→7: forecast utilization 0\.09 < 0\.25 .*; cooldown ok, step ≤ 1, need 2$/);
    assert.equal(decide({ ...cfg, maxScaleDownStep: 3 }, initialPolicyState(), sample({ busy: 3, workers: 8 })).desired, 5);
    // The reactive mode keeps the step whatever the utilization.
    assert.equal(decide({ ...cfg, mode: 'reactive' }, initialPolicyState(), sample({ busy: 0, workers: 8 })).desired, 7);
    // Demand 4 on 32 executors: 0.125; the need is ceil(4 / 2.4) = 2, so a step of 10 stops at 2 …
    assert.equal(decide({ ...cfg, maxScaleDownStep: 10 }, initialPolicyState(), sample({ busy: 4, workers: 8 })).desired, 2);
    // … and at the min when that is higher.
    assert.equal(decide({ ...cfg, maxScaleDownStep: 10, minWorkers: 3 }, initialPolicyState(), sample({ busy: 4, workers: 8 })).desired, 3);
    const atMin = decide(cfg, initialPolicyState(), sample({ busy: 0, workers: 1 }));
    assert.equal(atMin.direction, 'hold');
    assert.match(atMin.reason, /^hold: at min 1; /);
  });

  it('does not scale down into a scale-up: the pool after a step is at most at the target utilization', () => {
    // Demand 5 on 10×4: 0.125; step 10 would leave 1 worker (utilization 1.25), the need 3 (0.42).
    const d = decide({ ...cfg, maxScaleDownStep: 10 }, initialPolicyState(), sample({ busy: 5, workers: 10 }));
    assert.equal(d.desired, 3);
    assert.ok(5 / (d.desired * 4) <= cfg.targetUtilization);
  });

  it('holds between the thresholds', () => {
    const d = decide(cfg, initialPolicyState(), sample({ busy: 2, workers: 1 }));
    assert.equal(d.direction, 'hold');
    assert.equal(d.reason, 'hold: utilization 0.50 within [0.25, 0.75] (demand 2.0 executors: smoothed 2.0, trend +0.00/s, little 0.0)');
  });

  it('clamps to [min, max]: a pool outside the bounds comes back regardless of cooldown', () => {
    const justChanged: PolicyState = { history: [], lastScaleUpAt: T0 - 1000, lastScaleDownAt: T0 - 1000 };
    const under = decide(cfg, justChanged, sample({ busy: 0, workers: 0 }));
    assert.equal(under.desired, 1);
    assert.equal(under.direction, 'up');
    assert.match(under.reason, /^up 0→1: below min 1/);
    const over = decide(cfg, justChanged, sample({ busy: 100, workers: 12 }));
    assert.equal(over.desired, 10);
    assert.equal(over.direction, 'down');
    // A scale-up stops at the max, and at the max it holds.
    assert.equal(decide(cfg, initialPolicyState(), sample({ busy: 100, workers: 2 })).desired, 10);
    const atMax = decide(cfg, initialPolicyState(), sample({ busy: 100, workers: 10 }));
    assert.equal(atMax.direction, 'hold');
    assert.match(atMax.reason, /^hold: at max 10; utilization 2\.50 > 0\.75/);
  });

  it("'static' is always the min; 'reactive' decides on the load now, not the smoothed or predicted load", () => {
    const stat = { ...cfg, mode: 'static' as const, minWorkers: 3 };
    assert.equal(decide(stat, initialPolicyState(), sample({ busy: 100, workers: 3 })).desired, 3);
    assert.equal(decide(stat, initialPolicyState(), sample({ busy: 0, workers: 7 })).desired, 3);
    // After a long high load the smoothed value is still high; load is 2 on 4 executors now.
    const remembered: PolicyState = { smoothed: 100, history: [] };
    const reactive = decide({ ...cfg, mode: 'reactive' }, remembered, sample({ busy: 2, workers: 1 }));
    assert.equal(reactive.direction, 'hold');
    assert.match(reactive.reason, /demand 2\.0 executors: busy 2 \+ queued 0/);
    const predictive = decide(cfg, remembered, sample({ busy: 2, workers: 1 }));
    // 0.3·2 + 0.7·100 = 70.6 executors: ceil(70.6 / 2.4) = 30, clamped to 10.
    assert.equal(predictive.desired, 10);
  });

  it('is pure: the same inputs give the same decision and the given state is not changed', () => {
    const state: PolicyState = { smoothed: 3, history: [{ at: T0 - 10_000, load: 3, arrivalRate: 0 }] };
    const copy = structuredClone(state);
    const a = decide(cfg, state, sample({ busy: 9, workers: 1 }));
    const b = decide(cfg, state, sample({ busy: 9, workers: 1 }));
    assert.deepEqual(a, b);
    assert.deepEqual(state, copy);
  });
});

/** Feeds samples 5 s apart through decide (a fake clock from T0) and returns every decision. */
function run(config: PolicyConfig, samples: Partial<PoolSample>[]) {
  let state: PolicyState = initialPolicyState();
  return samples.map((over, i) => {
    const d = decide(config, state, sample({ at: T0 + i * 5000, ...over }));
    state = d.state;
    return d;
  });
}

describe('decide: what the predictive mode adds to the seed', () => {
  const big: PolicyConfig = { ...cfg, maxWorkers: 20 };

  it("takes Little's λ as the mean arrival rate over the trend window, not the newest tick's", () => {
    assert.equal(meanArrivalRate([]), 0);
    close(meanArrivalRate([{ arrivalRate: 1 }, { arrivalRate: 2 }, { arrivalRate: 6 }]), 3);
    // Twelve ticks: 1/s, 1/s, then nine at 2/s and one at 3/s; the window of 10 holds the last ten.
    const rates = [1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 2, 3];
    const last = run(
      big,
      rates.map((arrivalRate) => ({ arrivalRate, meanActionSeconds: 4, busy: 8, workers: 4 })),
    ).at(-1)!;
    assert.equal(last.state.history.length, 10);
    close(last.inputs.arrivalRate, 2.1);
    // 15 arrivals in 5 s where 10 were expected: within 3σ (√10 ≈ 3.2), no burst.
    assert.equal(last.inputs.burst, false);
    close(last.inputs.littleExecutors, 2.1 * 4);
  });

  it('calls a tick a burst when its arrivals exceed the expected by more than 3 Poisson σ and one arrival', () => {
    const earlier = [0, 5000, 10_000].map((at) => ({ at: T0 + at, arrivalRate: 1 }));
    // 5 expected in the 5 s since the last point; the bar is 5 + 3·√5 + 1 = 12.71 arrivals.
    assert.equal(isBurst(earlier, sample({ at: T0 + 15_000, arrivalRate: 2.5 })), false, '12.5 arrivals');
    assert.equal(isBurst(earlier, sample({ at: T0 + 15_000, arrivalRate: 2.6 })), true, '13 arrivals');
    // The interval counts: 2.6/s over 10 s is 26 arrivals where 10 + 3·√10 + 1 = 20.5 is the bar.
    assert.equal(isBurst(earlier, sample({ at: T0 + 20_000, arrivalRate: 2.6 })), true);
    assert.equal(isBurst(earlier, sample({ at: T0 + 20_000, arrivalRate: 2 })), false, '20 arrivals');
    // A quiet pool: one action is not a burst, two are.
    const quiet = [{ at: T0, arrivalRate: 0 }];
    assert.equal(isBurst(quiet, sample({ at: T0 + 5000, arrivalRate: 0.2 })), false);
    assert.equal(isBurst(quiet, sample({ at: T0 + 5000, arrivalRate: 0.4 })), true);
    // Nothing to compare with, or no time between: no burst.
    assert.equal(isBurst([], sample({ arrivalRate: 100 })), false);
    assert.equal(isBurst(quiet, sample({ at: T0, arrivalRate: 100 })), false);
  });

  it("sizes a burst's scale-up with the burst's own rate at its first tick", () => {
    // Nine quiet ticks at 0.3 actions/s of 10 s actions, then 4/s: 20 arrive, 4 run, 16 queue on 2 workers.
    const quiet = Array.from({ length: 9 }, () => ({ arrivalRate: 0.3, meanActionSeconds: 10, workers: 2 }));
    const d = run(big, [...quiet, { arrivalRate: 4, meanActionSeconds: 10, busy: 4, queued: 16, workers: 2 }]).at(-1)!;
    assert.equal(d.inputs.burst, true);
    // λ over the window (9·0.3 + 4) / 10 = 0.67: Little 6.7 + the queue drained in 30 s, 16·10/30.
    close(d.inputs.arrivalRate, 0.67);
    close(d.inputs.littleExecutors, 6.7 + 16 / 3);
    // Smoothed 0.3·20 = 6; the slope of nine 0s and a 20 over 45 s is 450/2062.5 per second.
    close(d.inputs.predicted, 6 + (450 / 2062.5) * 30);
    // Sized for the burst: 4·10 + 16/3 executors, ceil(45.33 / 2.4) = 19 workers.
    close(d.inputs.sizedFor, 40 + 16 / 3);
    assert.equal(d.desired, 19);
    assert.match(d.reason, /^up 2→19: utilization 1\.57 > 0\.75 .*; cooldown ok, sized for 45\.3 executors \(burst: 4\.0 arrivals\/s against 0\.7\)$/);
    // The same tick at 0.8/s is no burst (4 arrivals against 1.5 + 3·√1.5 + 1): sized for Little over the window.
    const calm = run(big, [...quiet, { arrivalRate: 0.8, meanActionSeconds: 10, busy: 4, queued: 16, workers: 2 }]).at(-1)!;
    assert.equal(calm.inputs.burst, false);
    close(calm.inputs.sizedFor, 3.5 + 16 / 3);
    assert.equal(calm.desired, 4);
  });

  it('grows when the trend says so, but sizes for the smoothed load, and by one worker at least', () => {
    // Loads 0, 5, then 10 on 2 workers, 10 s apart: smoothed 4.05, trend +0.5/s, predicted 19.05 of 8 executors
    // triggers the scale-up. The seed sized for it, ceil(19.05 / 2.4) = 8 workers; the smoothed 4.05 needs 2,
    // so the pool grows by one.
    const rising: PolicyState = {
      smoothed: 1.5,
      history: [
        { at: T0, load: 0, arrivalRate: 0 },
        { at: T0 + 10_000, load: 5, arrivalRate: 0 },
      ],
    };
    const d = decide(big, rising, sample({ at: T0 + 20_000, busy: 10, workers: 2 }));
    close(d.inputs.predicted, 19.05);
    close(d.inputs.sizedFor, 4.05);
    assert.equal(d.desired, 3);
    // A smoothed load above the pool sizes it: 0.3·40 + 0.7·10 = 19, ceil(19 / 2.4) = 8 (the forecast, 109, would be 20).
    const jump = decide(big, { smoothed: 10, history: [{ at: T0, load: 10, arrivalRate: 0 }] }, sample({ at: T0 + 10_000, busy: 40, workers: 2 }));
    close(jump.inputs.predicted, 109);
    assert.equal(jump.desired, 8);
  });

  it("shrinks on the forecast alone: Little's law over the window still holds arrivals that stopped", () => {
    // Nine ticks of 2 actions/s of 5 s, then none, and nothing left to do: λ over the window is 1.8,
    // Little's law 9 executors, 0.28 of 32 (the seed, deciding on the higher of the two, held), but the
    // smoothed load is 0.
    const history = Array.from({ length: 9 }, (_, i) => ({ at: T0 + i * 5000, load: 0, arrivalRate: 2 }));
    const d = decide(big, { smoothed: 0, history }, sample({ at: T0 + 45_000, arrivalRate: 0, meanActionSeconds: 5, workers: 8 }));
    close(d.inputs.littleExecutors, 9);
    close(d.inputs.utilization, 9 / 32);
    assert.equal(d.inputs.forecastUtilization, 0);
    assert.equal(d.direction, 'down');
    assert.equal(d.desired, 6);
    // But no further than the need for Little's 9 executors, ceil(9 / 2.4) = 4 workers: from 5, a far-below step
    // would leave 3, 9 of 12 executors, and a little more arrivals would grow the pool right back.
    const small = { arrivalRate: 0, meanActionSeconds: 5, workers: 5 };
    const floor = decide(big, { smoothed: 0, history }, sample({ at: T0 + 45_000, ...small }));
    assert.equal(floor.desired, 4);
    assert.match(floor.reason, /^down 5→4: .*step ≤ 2 \(far below\), need 4$/);
    const after = decide(big, { smoothed: 0, history }, sample({ at: T0 + 45_000, ...small, workers: 4 }));
    assert.equal(after.direction, 'hold');
    assert.match(after.reason, /^hold: need 4 workers; forecast utilization 0\.00 < 0\.25/);
  });

  it('removes twice maxScaleDownStep while the forecast is under a quarter of the down threshold', () => {
    // 1 executor busy of 32: 0.03 < 0.0625.
    const far = decide(cfg, initialPolicyState(), sample({ busy: 1, workers: 8 }));
    assert.equal(far.desired, 6);
    assert.equal(
      far.reason,
      'down 8→6: forecast utilization 0.03 < 0.25 (forecast 1.0 executors: smoothed 1.0, trend +0.00/s); cooldown ok, step ≤ 2 (far below), need 1',
    );
    assert.equal(decide({ ...cfg, maxScaleDownStep: 3 }, initialPolicyState(), sample({ busy: 1, workers: 8 })).desired, 2);
    // 2 of 32 is 0.0625, not under it: one step.
    assert.equal(decide(cfg, initialPolicyState(), sample({ busy: 2, workers: 8 })).desired, 7);
    // The need and the min still bound it.
    assert.equal(decide({ ...cfg, maxScaleDownStep: 5 }, initialPolicyState(), sample({ busy: 1, workers: 8 })).desired, 1);
    assert.equal(decide({ ...cfg, minWorkers: 7 }, initialPolicyState(), sample({ busy: 1, workers: 8 })).desired, 7);
  });
});

describe('the policy schema', () => {
  it('fills every default from the seed', () => {
    assert.deepEqual(compilePolicy({}), defaultPolicy);
    assert.equal(compilePolicy({ alpha: 1, mode: 'reactive' }).alpha, 1);
  });

  const refusals: [string, Record<string, unknown>, RegExp][] = [
    ['α of 0', { alpha: 0 }, /alpha: alpha must be in \(0, 1\]/],
    ['α above 1', { alpha: 1.5 }, /alpha: alpha must be in \(0, 1\]/],
    ['a threshold above 1', { scaleUpThreshold: 1.2 }, /scaleUpThreshold: scaleUpThreshold must be in \(0, 1\]/],
    ['down not below up', { scaleDownThreshold: 0.8 }, /scaleDownThreshold: scaleDownThreshold 0\.8 must be below scaleUpThreshold 0\.75/],
    ['a target above the up threshold', { targetUtilization: 0.9 }, /targetUtilization: targetUtilization 0\.9 must be above/],
    ['a target at the down threshold', { targetUtilization: 0.25 }, /targetUtilization: /],
    ['min above max', { minWorkers: 5, maxWorkers: 2 }, /minWorkers: minWorkers 5 is above maxWorkers 2/],
    ['max above 1000', { maxWorkers: 1001 }, /maxWorkers: maxWorkers must be ≤ 1000/],
    ['a fractional worker count', { minWorkers: 1.5 }, /minWorkers: minWorkers must be a whole number/],
    ['a negative cooldown', { scaleUpCooldownSeconds: -1 }, /scaleUpCooldownSeconds: scaleUpCooldownSeconds must be ≥ 0/],
    ['a trend window of one sample', { trendWindow: 1 }, /trendWindow: trendWindow must be ≥ 2/],
    ['an unknown mode', { mode: 'magic' }, /mode: mode must be 'predictive', 'reactive' or 'static'/],
    ['an unknown field', { alpah: 0.3 }, /Unrecognized key.*alpah/],
  ];
  for (const [what, input, message] of refusals) {
    it(`refuses ${what} with INVALID_ARGUMENT naming the field`, () => {
      assert.throws(
        () => compilePolicy(input),
        (e: unknown) => {
          assert.equal(codeOf(e), Code.INVALID_ARGUMENT);
          assert.match((e as Error).message, message);
          return true;
        },
      );
    });
  }
});
