import type { Decision, PolicyConfig, PolicyState, PoolSample } from './autoscale.js';

/**
 * The seed's parameters. The ones the seed leaves open, and why:
 * - targetUtilization 0.6: a pool sized for 0.6 must see its demand grow by a
 *   quarter (0.75 / 0.6) before the next scale-up, and shrink by more than
 *   half (0.25 / 0.6) before a scale-down, so a resize never re-triggers
 *   itself in either direction on the next tick.
 * - horizonSeconds 30: about what a cloud machine takes from "asked for" to
 *   "registered"; a worker asked for now helps with the load of then, so that
 *   is the load to size for. It is also the scale-up cooldown, the soonest
 *   the next scale-up can correct a wrong prediction.
 * - trendWindow 10: at the controller's few-second tick, half a minute of
 *   points; fewer and one burst makes the slope swing, more and a turn in
 *   the load shows up late.
 * - executorsPerWorker 4: a placeholder a controller replaces with what its
 *   workers really bring.
 * - maxScaleDownStep 1: removing a worker costs a drain and perhaps a cold
 *   cache on the worker started again later; growing is cheap by comparison.
 */
export const defaultPolicy: PolicyConfig = {
  minWorkers: 1,
  maxWorkers: 10,
  executorsPerWorker: 4,
  alpha: 0.3,
  trendWindow: 10,
  horizonSeconds: 30,
  scaleUpThreshold: 0.75,
  scaleDownThreshold: 0.25,
  targetUtilization: 0.6,
  scaleUpCooldownSeconds: 30,
  scaleDownCooldownSeconds: 120,
  maxScaleDownStep: 1,
  mode: 'predictive',
};

export function initialPolicyState(): PolicyState {
  return { history: [] };
}

/** Least-squares slope of load over time, per second; 0 until two distinct instants are known. */
export function trendPerSecond(points: readonly { at: number; load: number }[]): number {
  if (points.length < 2) return 0;
  const t0 = points[0]!.at;
  const xs = points.map((p) => (p.at - t0) / 1000);
  const meanX = xs.reduce((a, b) => a + b, 0) / xs.length;
  const meanY = points.reduce((a, p) => a + p.load, 0) / points.length;
  let sxy = 0;
  let sxx = 0;
  for (let i = 0; i < points.length; i++) {
    const dx = xs[i]! - meanX;
    sxy += dx * (points[i]!.load - meanY);
    sxx += dx * dx;
  }
  return sxx === 0 ? 0 : sxy / sxx;
}

/**
 * Executors Little's law asks for: L = λ·W busy in steady state, plus enough
 * to drain today's queue within the horizon. The queue term is capped at the
 * queue's length: one action never uses more than one executor, however
 * long it runs. Without a measured action time it is 0 and the prediction
 * alone decides.
 */
export function littleExecutors(sample: PoolSample, horizonSeconds: number): number {
  const w = sample.meanActionSeconds;
  if (!(w > 0)) return 0;
  const drain = Math.min(sample.queued, (sample.queued * w) / horizonSeconds);
  return sample.arrivalRate * w + drain;
}

const f1 = (n: number) => (Number.isFinite(n) ? n.toFixed(1) : '∞');
const f2 = (n: number) => (Number.isFinite(n) ? n.toFixed(2) : '∞');
const signed = (n: number) => `${n >= 0 ? '+' : ''}${n.toFixed(2)}`;
const secs = (ms: number) => `${Math.floor(ms / 1000)} s`;

/**
 * The desired worker count of one pool from its newest sample. Pure and
 * deterministic: the time is the sample's, and all memory is in the state
 * it is given and returns, so a controller, the simulator and the tests
 * run the same decisions on the same inputs.
 */
export function decide(config: PolicyConfig, state: PolicyState, sample: PoolSample): Decision {
  const load = sample.busy + sample.queued;
  const smoothed = state.smoothed === undefined ? load : config.alpha * load + (1 - config.alpha) * state.smoothed;
  const history = [...state.history, { at: sample.at, load }].slice(-Math.max(1, config.trendWindow));
  const trend = trendPerSecond(history);
  const predicted = Math.max(smoothed + trend * config.horizonSeconds, 0);
  const little = littleExecutors(sample, config.horizonSeconds);
  const demand = config.mode === 'predictive' ? Math.max(predicted, little) : load;
  const current = sample.workers;
  const capacity = current * config.executorsPerWorker;
  const utilization = capacity > 0 ? demand / capacity : demand > 0 ? Number.POSITIVE_INFINITY : 0;
  const need = Math.ceil(demand / (config.executorsPerWorker * config.targetUtilization) - 1e-9);
  const clamp = (n: number) => Math.min(config.maxWorkers, Math.max(config.minWorkers, n));

  const why =
    config.mode === 'predictive'
      ? `demand ${f1(demand)} executors: smoothed ${f1(smoothed)}, trend ${signed(trend)}/s, little ${f1(little)}`
      : `demand ${f1(demand)} executors: busy ${sample.busy} + queued ${sample.queued}`;
  const since = (at: number | undefined) => (at === undefined ? Number.POSITIVE_INFINITY : sample.at - at);
  const upWait = config.scaleUpCooldownSeconds * 1000 - since(state.lastScaleUpAt);
  const lastChange = Math.max(state.lastScaleUpAt ?? Number.NEGATIVE_INFINITY, state.lastScaleDownAt ?? Number.NEGATIVE_INFINITY);
  const downWait = config.scaleDownCooldownSeconds * 1000 - since(Number.isFinite(lastChange) ? lastChange : undefined);

  let desired = current;
  let reason: string;
  if (config.mode === 'static') {
    desired = config.minWorkers;
    reason = `static: ${config.minWorkers} workers (${why})`;
  } else if (current < config.minWorkers || current > config.maxWorkers) {
    // Bounds are the operator's word: they hold at once, cooldown or not.
    const below = current < config.minWorkers;
    desired = below ? clamp(need) : config.maxWorkers;
    const bound = below ? `below min ${config.minWorkers}` : `above max ${config.maxWorkers}`;
    reason = `${below ? 'up' : 'down'} ${current}→${desired}: ${bound}, bounds hold regardless of cooldown (${why})`;
  } else if (utilization > config.scaleUpThreshold) {
    const cond = `utilization ${f2(utilization)} > ${f2(config.scaleUpThreshold)} (${why})`;
    if (upWait > 0) {
      reason = `hold: scale-up cooldown, ${secs(since(state.lastScaleUpAt))} of ${config.scaleUpCooldownSeconds} s (${secs(upWait)} left); ${cond}`;
    } else {
      desired = clamp(need);
      // The target is at most the up threshold, so the need exceeds the current count here: only the max can hold it.
      reason = desired > current ? `up ${current}→${desired}: ${cond}; cooldown ok` : `hold: at max ${config.maxWorkers}; ${cond}`;
    }
  } else if (utilization < config.scaleDownThreshold) {
    const cond = `utilization ${f2(utilization)} < ${f2(config.scaleDownThreshold)} (${why})`;
    if (downWait > 0) {
      reason = `hold: scale-down cooldown, ${secs(since(lastChange))} of ${config.scaleDownCooldownSeconds} s (${secs(downWait)} left); ${cond}`;
    } else {
      desired = Math.min(current, clamp(Math.max(current - config.maxScaleDownStep, need)));
      reason =
        desired < current
          ? `down ${current}→${desired}: ${cond}; cooldown ok, step ≤ ${config.maxScaleDownStep}, need ${need}`
          : `hold: ${current === config.minWorkers ? `at min ${config.minWorkers}` : `need ${need} workers`}; ${cond}`;
    }
  } else {
    reason = `hold: utilization ${f2(utilization)} within [${f2(config.scaleDownThreshold)}, ${f2(config.scaleUpThreshold)}] (${why})`;
  }

  const direction = desired > current ? 'up' : desired < current ? 'down' : 'hold';
  const next: PolicyState = { smoothed, history };
  const lastUp = direction === 'up' ? sample.at : state.lastScaleUpAt;
  const lastDown = direction === 'down' ? sample.at : state.lastScaleDownAt;
  if (lastUp !== undefined) next.lastScaleUpAt = lastUp;
  if (lastDown !== undefined) next.lastScaleDownAt = lastDown;
  return {
    desired,
    current,
    direction,
    reason,
    inputs: { load, smoothed, trend, predicted, littleExecutors: little, utilization },
    state: next,
  };
}
