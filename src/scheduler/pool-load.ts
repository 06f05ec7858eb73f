import type { Clock } from '../common/clock.js';
import { type ExecutorCapabilities, type Requirement, unmet } from '../executor/platform.js';

/** A pool as the scheduler sees it: the platform properties its workers declare. */
export interface PoolLabels {
  properties: Readonly<Record<string, readonly string[]>>;
}

/** What the scheduler can say of one pool: its queue and executors now, and its traffic since a given time. */
export interface PoolLoad {
  /** Waiting actions that count toward this pool (poolForAction). */
  queued: number;
  /** This process's executors of the pool (not draining) executing or held. */
  busy: number;
  executors: number;
  /** Actions counting toward this pool that were submitted since `since`. */
  arrived: number;
  /** Executions finished since `since` on the pool's executors. */
  completed: number;
  /** Their summed time on the executor, milliseconds. */
  executionMs: number;
}

/** Whether an executor belongs to the pool: it declares every value of every property of the pool. */
export function inPool(pool: PoolLabels, caps: ExecutorCapabilities): boolean {
  return Object.entries(pool.properties).every(([name, values]) => values.every((v) => caps.properties[name]?.includes(v)));
}

/**
 * Whether a pool's workers can take an action: its labels only. Resource
 * requests (cpu, memory, network) are left out: a pool with no workers yet has
 * no resources to compare against, and an action no worker can take fails in
 * the dispatcher anyway.
 */
export function poolTakes(pool: PoolLabels, reqs: readonly Requirement[]): boolean {
  const caps: ExecutorCapabilities = {
    properties: pool.properties,
    cpus: Number.POSITIVE_INFINITY,
    memoryBytes: Number.POSITIVE_INFINITY,
    networkAllowed: true,
  };
  return unmet(reqs, caps).length === 0;
}

const size = (p: PoolLabels) => Object.values(p.properties).reduce((n, vs) => n + vs.length, 0);

/**
 * The pool an action counts toward: of those that take it, the one with the
 * fewest properties (first listed on a tie). A plain Linux action grows the
 * general pool, not a special one that could also take it; an action
 * needing pool=big has only the big pool. Counting it once keeps two pools
 * from growing for the same action. -1 if no pool takes it.
 */
export function poolForAction(pools: readonly PoolLabels[], reqs: readonly Requirement[]): number {
  let best = -1;
  for (const [i, p] of pools.entries()) if (poolTakes(p, reqs) && (best < 0 || size(p) < size(pools[best]!))) best = i;
  return best;
}

/** The pool an executor counts toward: of those it belongs to, the one with the most properties (first listed on a tie); -1 if none. */
export function poolForExecutor(pools: readonly PoolLabels[], caps: ExecutorCapabilities): number {
  let best = -1;
  for (const [i, p] of pools.entries()) if (inPool(p, caps) && (best < 0 || size(p) > size(pools[best]!))) best = i;
  return best;
}

interface Finished {
  at: number;
  caps: ExecutorCapabilities;
  ms: number;
}

/**
 * Recent submissions and finished executions, kept so an autoscaler can ask
 * for the rates of each pool since its last look without the scheduler
 * knowing which pools exist. Bounded in count and age: an autoscaler looks
 * every few seconds, so ten minutes is far more than it ever asks for.
 */
export class LoadLog {
  private arrivals: { at: number; reqs: readonly Requirement[] }[] = [];
  private finished: Finished[] = [];

  constructor(
    private readonly clock: Clock,
    private readonly maxEvents = 100_000,
    private readonly maxAgeMs = 10 * 60_000,
  ) {}

  arrived(reqs: readonly Requirement[]): void {
    this.arrivals.push({ at: this.clock.now(), reqs });
    if (this.arrivals.length > this.maxEvents * 1.25) this.arrivals = this.arrivals.slice(-this.maxEvents);
  }

  /** An execution of `ms` on an executor with these capabilities ended with a recorded result. */
  executed(caps: ExecutorCapabilities, ms: number): void {
    this.finished.push({ at: this.clock.now(), caps, ms });
    if (this.finished.length > this.maxEvents * 1.25) this.finished = this.finished.slice(-this.maxEvents);
  }

  /**
   * Each pool's load from the queue's requirements (one entry per distinct
   * set, with how many wait with it), this process's executors, and the
   * events after `since`. Costs one pass over each, times the pools.
   */
  poolLoad(
    pools: readonly PoolLabels[],
    since: number,
    waiting: readonly { requirements: readonly Requirement[]; count: number }[],
    executors: readonly { caps: ExecutorCapabilities; busy: boolean }[],
  ): PoolLoad[] {
    const cutoff = this.clock.now() - this.maxAgeMs;
    if ((this.arrivals[0]?.at ?? Number.POSITIVE_INFINITY) < cutoff) this.arrivals = this.arrivals.filter((e) => e.at >= cutoff);
    if ((this.finished[0]?.at ?? Number.POSITIVE_INFINITY) < cutoff) this.finished = this.finished.filter((e) => e.at >= cutoff);
    const load = pools.map(() => ({ queued: 0, busy: 0, executors: 0, arrived: 0, completed: 0, executionMs: 0 }));
    for (const w of waiting) {
      const i = poolForAction(pools, w.requirements);
      if (i >= 0) load[i]!.queued += w.count;
    }
    const poolOf = (caps: ExecutorCapabilities) => poolForExecutor(pools, caps);
    for (const e of executors) {
      const i = poolOf(e.caps);
      if (i < 0) continue;
      load[i]!.executors++;
      if (e.busy) load[i]!.busy++;
    }
    for (const a of this.arrivals) {
      if (a.at <= since) continue;
      const i = poolForAction(pools, a.reqs);
      if (i >= 0) load[i]!.arrived++;
    }
    for (const f of this.finished) {
      if (f.at <= since) continue;
      const i = poolOf(f.caps);
      if (i < 0) continue;
      load[i]!.completed++;
      load[i]!.executionMs += f.ms;
    }
    return load;
  }
}

/** Waiting actions grouped by their requirements, for LoadLog.poolLoad. */
export function groupByRequirements(all: Iterable<readonly Requirement[]>): { requirements: readonly Requirement[]; count: number }[] {
  const groups = new Map<string, { requirements: readonly Requirement[]; count: number }>();
  for (const reqs of all) {
    const key = JSON.stringify(reqs);
    const g = groups.get(key);
    if (g) g.count++;
    else groups.set(key, { requirements: reqs, count: 1 });
  }
  return [...groups.values()];
}
