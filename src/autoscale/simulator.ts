import { seededRandom } from '../common/seeded-random.js';
import { failedPrecondition } from '../common/errors.js';
import type { Decision, PolicyConfig, PolicyState, PoolSample } from './autoscale.js';
import { decide, initialPolicyState } from './policy.js';

/**
 * A load trace replayed through decide() on a simulated clock, so policies
 * can be compared on worker-seconds and queue wait without machines: one
 * pool, a FIFO queue, workers that take a while to come up and then offer
 * executorsPerWorker executors each.
 */

/** A load over time: how many actions arrive per second at second t, and how long they run. */
export interface Trace {
  name: string;
  description: string;
  /** Arrivals stop here; the simulation goes on until the last action finishes. */
  durationSeconds: number;
  rate(t: number): number;
  meanActionSeconds: number;
  /** Seeds the arrivals and the action times, so a trace is the same on every run. */
  seed: number;
}

export interface Arrival {
  /** Seconds from the start of the trace. */
  at: number;
  seconds: number;
}

export interface SimOptions {
  policy: PolicyConfig;
  /** From asking for a worker to its executors taking work: about 20 s for a cloud machine, under 1 s for a local process. */
  startupSeconds: number;
  /** How often the controller samples the pool and decides. */
  tickSeconds: number;
}

export interface SimPoint {
  t: number;
  /** Executors wanted: busy + queued. */
  load: number;
  /** Workers paid for: ready and starting. */
  workers: number;
  queued: number;
}

export interface ScaleEvent {
  t: number;
  from: number;
  to: number;
  reason: string;
}

export interface SimResult {
  arrived: number;
  completed: number;
  /** Workers × seconds they existed, starting ones included: a booting machine is billed too. */
  workerSeconds: number;
  wait: { p50: number; p95: number; max: number };
  scaleEvents: ScaleEvent[];
  series: SimPoint[];
  endSeconds: number;
}

function poisson(mean: number, random: () => number): number {
  // Knuth's product of uniforms is exact and cheap for the few per second a trace asks for.
  const limit = Math.exp(-mean);
  let k = 0;
  let p = random();
  while (p > limit) {
    k++;
    p *= random();
  }
  return k;
}

/** The trace's actions: Poisson arrivals second by second at the trace's rate, exponential action times. */
export function arrivalsOf(trace: Trace): Arrival[] {
  const random = seededRandom(trace.seed);
  const out: Arrival[] = [];
  for (let s = 0; s < trace.durationSeconds; s++) {
    const n = poisson(Math.max(0, trace.rate(s + 0.5)), random);
    const times = Array.from({ length: n }, () => s + random()).sort((a, b) => a - b);
    for (const at of times) out.push({ at, seconds: Math.max(0.1, -trace.meanActionSeconds * Math.log(1 - random())) });
  }
  return out;
}

interface SimWorker {
  readyAt: number;
  /** Each executor's running action and when it ends; the action is only in here, so removing a busy worker would lose it. */
  slots: { action?: number; endsAt: number }[];
}

export function quantileOf(sorted: readonly number[], q: number): number {
  if (sorted.length === 0) return 0;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))]!;
}

/** Action times the pool's mean is taken over: recent enough to follow a change of workload. */
const MEAN_WINDOW = 100;
/** A simulated week past the trace's end. */
const GIVE_UP_SECONDS = 7 * 86_400;

export function simulate(trace: Trace | readonly Arrival[], options: SimOptions): SimResult {
  const arrivals = 'rate' in trace ? arrivalsOf(trace) : trace;
  const duration = 'rate' in trace ? trace.durationSeconds : Math.ceil(arrivals.at(-1)?.at ?? 0);
  const { policy, startupSeconds, tickSeconds } = options;
  const epw = policy.executorsPerWorker;
  const queue: number[] = [];
  let queueHead = 0;
  const waits: number[] = [];
  const recent: number[] = [];
  let next = 0;
  let completed = 0;
  let lastTick = 0;
  let arrivedSinceTick = 0;
  let completedSinceTick = 0;
  let state: PolicyState = initialPolicyState();
  let workerSeconds = 0;
  let t = 0;
  const series: SimPoint[] = [];
  const scaleEvents: ScaleEvent[] = [];

  const dispatch = (now: number) => {
    for (const w of workers) {
      if (w.readyAt > now) continue;
      for (const slot of w.slots) {
        if (queueHead === queue.length) return;
        if (slot.action !== undefined) continue;
        const i = queue[queueHead++]!;
        const a = arrivals[i]!;
        waits.push(now - a.at);
        slot.action = i;
        slot.endsAt = now + a.seconds;
        recent.push(a.seconds);
        if (recent.length > MEAN_WINDOW) recent.shift();
      }
    }
  };
  const finish = (now: number) => {
    for (const w of workers)
      for (const slot of w.slots)
        if (slot.action !== undefined && slot.endsAt <= now) {
          slot.action = undefined;
          completed++;
          completedSinceTick++;
        }
  };
  const newWorker = (readyAt: number): SimWorker => ({ readyAt, slots: Array.from({ length: epw }, () => ({ endsAt: 0 })) });
  let workers: SimWorker[] = Array.from({ length: policy.minWorkers }, () => newWorker(0));
  // Counted from the workers' slots, so an action on a removed worker would no longer be waited for, and show as lost.
  const runningNow = () => workers.reduce((n, w) => n + w.slots.filter((x) => x.action !== undefined).length, 0);
  let running = 0;

  while (next < arrivals.length || queueHead < queue.length || running > 0 || t < duration) {
    // The next instant anything happens: an arrival, an action's end, a worker coming up, a tick.
    let soonest = lastTick + tickSeconds;
    if (next < arrivals.length) soonest = Math.min(soonest, arrivals[next]!.at);
    for (const w of workers) {
      if (w.readyAt > t) soonest = Math.min(soonest, w.readyAt);
      for (const slot of w.slots) if (slot.action !== undefined) soonest = Math.min(soonest, slot.endsAt);
    }
    // A pool that can never drain (a static pool of 0) must end the run, not spin forever.
    if (soonest > duration + GIVE_UP_SECONDS)
      throw failedPrecondition(
        `${queue.length - queueHead} actions still queued ${GIVE_UP_SECONDS} s after the trace ended: the policy never gave them a worker (minWorkers ${policy.minWorkers}, mode ${policy.mode})`,
      );
    workerSeconds += workers.length * (soonest - t);
    t = soonest;
    finish(t);
    while (next < arrivals.length && arrivals[next]!.at <= t) {
      queue.push(next++);
      arrivedSinceTick++;
    }
    dispatch(t);
    running = runningNow();
    if (t < lastTick + tickSeconds) continue;

    lastTick = t;
    const busy = running;
    const queued = queue.length - queueHead;
    const sample: PoolSample = {
      at: Math.round(t * 1000),
      queued,
      busy,
      executors: workers.filter((w) => w.readyAt <= t).length * epw,
      // Starting workers count: they were asked for, and the policy must not ask again while they boot.
      workers: workers.length,
      arrivalRate: arrivedSinceTick / tickSeconds,
      completionRate: completedSinceTick / tickSeconds,
      meanActionSeconds: recent.length > 0 ? recent.reduce((a, b) => a + b, 0) / recent.length : 0,
    };
    arrivedSinceTick = 0;
    completedSinceTick = 0;
    const d: Decision = decide(policy, state, sample);
    state = d.state;
    const before = workers.length;
    if (d.desired > before) {
      for (let i = before; i < d.desired; i++) workers.push(newWorker(t + startupSeconds));
    } else if (d.desired < before) {
      // Only idle workers go, starting ones first (nothing to drain); a busy one stays until a later tick.
      let surplus = before - d.desired;
      const idle = (w: SimWorker) => w.slots.every((x) => x.action === undefined);
      const order = [...workers].sort((a, b) => b.readyAt - a.readyAt);
      const gone = new Set<SimWorker>();
      for (const w of order) if (surplus > 0 && idle(w)) gone.add(w), surplus--;
      workers = workers.filter((w) => !gone.has(w));
    }
    if (workers.length !== before) scaleEvents.push({ t, from: before, to: workers.length, reason: d.reason });
    series.push({ t, load: busy + queued, workers: workers.length, queued });
    // Workers that start at once (startupSeconds 0) take work in the same instant.
    dispatch(t);
    running = runningNow();
  }

  waits.sort((a, b) => a - b);
  return {
    arrived: arrivals.length,
    completed,
    workerSeconds,
    wait: { p50: quantileOf(waits, 0.5), p95: quantileOf(waits, 0.95), max: waits.at(-1) ?? 0 },
    scaleEvents,
    series,
    endSeconds: t,
  };
}
