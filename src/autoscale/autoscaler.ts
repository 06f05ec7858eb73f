import { type Clock, systemClock } from '../common/clock.js';
import type { Logger } from '../common/logger.js';
import type { WorkerGroup } from '../executor/executor-slot.js';
import type { Scheduler } from '../scheduler/scheduler.js';
import type { Decision, PolicyConfig, PolicyState, PoolSample, WorkerProvider } from './autoscale.js';
import { decide, initialPolicyState } from './policy.js';

/** One pool the controller scales: its workers declare `properties` and are named `<name>-…`. */
export interface PoolSpec {
  name: string;
  properties: Readonly<Record<string, readonly string[]>>;
  policy: PolicyConfig;
  provider: WorkerProvider;
}

export interface AutoscalerOptions {
  scheduler: Pick<Scheduler, 'poolLoad' | 'assignments' | 'completedByExecutor'>;
  /** The workers connected to this scheduler. */
  workers: () => readonly WorkerGroup[];
  /**
   * Takes a connected worker out of rotation at the scheduler: it gets no
   * new work from the moment this returns. False if no such worker is connected.
   */
  drain: (name: string) => boolean;
  pools: readonly PoolSpec[];
  log: Logger;
  clock?: Clock;
  tickMs?: number;
  /** A worker asked for that has not registered by then counts as started no more (and is logged). */
  startTimeoutMs?: number;
  /** A drained worker the provider stopped that is still connected after this is logged. */
  stopTimeoutMs?: number;
  /** Holds are logged at info this often (debug otherwise); changes always are. */
  holdLogEveryMs?: number;
}

/** What `repr status` and the metrics show of one pool. */
export interface PoolStatus {
  name: string;
  provider: WorkerProvider['kind'];
  /** Registered workers of the pool in rotation. */
  workers: number;
  /** Asked for, not registered yet. */
  starting: number;
  /** Taken out of rotation, not gone yet. */
  draining: number;
  desired: number;
  /** The newest decision's demand prediction, executors. */
  predicted: number;
  last?: { direction: Decision['direction']; reason: string; at: number };
  /** The newest decision that changed the pool. */
  lastChange?: { direction: Decision['direction']; reason: string; at: number };
  /** Decisions since start, by direction. */
  decisions: Record<Decision['direction'], number>;
}

interface Draining {
  since: number;
  /** When the provider was asked to stop it; unset while it still executes something. */
  removedAt?: number;
}

class PoolControl {
  state: PolicyState = initialPolicyState();
  /** Workers asked for and not registered yet, with when they were asked for; '' for a name known only once it registers. */
  starting: { name: string; at: number }[] = [];
  /** Connected workers of the pool: when each was first seen, and whether it answered one of `starting`. */
  readonly seen = new Map<string, { at: number; claimed: boolean }>();
  readonly draining = new Map<string, Draining>();
  /** Kept between samples without completions: the pool's actions did not change length because none finished. */
  meanActionSeconds = 0;
  desired: number;
  predicted = 0;
  last?: PoolStatus['last'];
  lastChange?: PoolStatus['lastChange'];
  lastHoldLogged = Number.NEGATIVE_INFINITY;
  readonly decisions = { up: 0, down: 0, hold: 0 };
  /** A provider call of this pool in progress: the next tick leaves the pool alone until it ends. */
  busy = false;
  /** The provider's own list was read once, at the first tick. */
  adopted = false;

  constructor(readonly spec: PoolSpec) {
    this.desired = spec.policy.minWorkers;
  }

  owns(worker: string): boolean {
    return worker.startsWith(`${this.spec.name}-`);
  }
}

/**
 * The controller: every tick it samples each pool from the scheduler, asks
 * the policy for a worker count, and carries the decision out through the
 * pool's provider. Growing asks the provider for workers and counts them as
 * the pool's until they register, so they are not asked for twice. Shrinking
 * picks idle workers, takes them out of rotation at the scheduler first (so
 * nothing new is assigned to them whatever the provider does), and asks the
 * provider to stop them only once they execute nothing: an action already
 * assigned finishes where it is, and no action is lost or re-run.
 */
export class Autoscaler {
  private readonly clock: Clock;
  private readonly tickMs: number;
  private readonly controls: PoolControl[];
  private lastSampleAt: number;
  private cancelTick: (() => void) | undefined;
  private closed = false;
  private ticking: Promise<void> | undefined;

  constructor(private readonly o: AutoscalerOptions) {
    this.clock = o.clock ?? systemClock;
    this.tickMs = o.tickMs ?? 5000;
    this.controls = o.pools.map((p) => new PoolControl(p));
    this.lastSampleAt = this.clock.now();
  }

  start(): void {
    this.o.log.info(
      {
        pools: this.o.pools.map((p) => ({ name: p.name, provider: p.provider.kind, min: p.policy.minWorkers, max: p.policy.maxWorkers })),
        tickMs: this.tickMs,
      },
      'autoscaler started',
    );
    this.schedule(0);
  }

  private schedule(ms: number): void {
    if (this.closed) return;
    this.cancelTick = this.clock.setTimeout(() => {
      this.ticking = this.tick()
        .catch((e) => this.o.log.error({ err: e }, 'autoscaler tick failed'))
        .finally(() => {
          this.ticking = undefined;
          this.schedule(this.tickMs);
        });
    }, ms);
  }

  /** One look at every pool and what follows from it; exposed for tests that drive the clock. */
  async tick(): Promise<void> {
    const unadopted = this.controls.filter((c) => !c.adopted);
    if (unadopted.length > 0) await Promise.all(unadopted.map((c) => this.adopt(c)));
    const now = this.clock.now();
    const seconds = Math.max((now - this.lastSampleAt) / 1000, 1e-3);
    const loads = this.o.scheduler.poolLoad(
      this.controls.map((c) => ({ properties: c.spec.properties })),
      this.lastSampleAt,
    );
    this.lastSampleAt = now;
    const groups = this.o.workers();
    const busyIds = new Set(this.o.scheduler.assignments().keys());
    const work: Promise<void>[] = [];
    for (const [i, c] of this.controls.entries()) {
      const load = loads[i]!;
      const mine = groups.filter((g) => c.owns(g.name));
      this.settleStarting(c, mine, now);
      this.settleDraining(c, mine, now);
      if (c.busy) continue;
      const active = mine.filter((g) => !g.draining && !c.draining.has(g.name));
      if (load.completed > 0) c.meanActionSeconds = load.executionMs / load.completed / 1000;
      const sample: PoolSample = {
        at: now,
        queued: load.queued,
        busy: load.busy,
        executors: load.executors,
        // Workers asked for count as the pool's already: a pool waiting for its new workers to start must not ask again.
        workers: active.length + c.starting.length,
        arrivalRate: load.arrived / seconds,
        completionRate: load.completed / seconds,
        meanActionSeconds: c.meanActionSeconds,
      };
      const d = decide(c.spec.policy, c.state, sample);
      this.record(c, d, sample, now);
      const previous = c.state;
      c.state = d.state;
      const act = this.act(c, d, mine, busyIds, previous, now);
      if (act) work.push(act);
    }
    await Promise.all(work);
  }

  /** Logs and counts a decision: every change, and a hold now and then. */
  private record(c: PoolControl, d: Decision, sample: PoolSample, now: number): void {
    c.decisions[d.direction]++;
    c.desired = d.desired;
    c.predicted = d.inputs.predicted;
    c.last = { direction: d.direction, reason: d.reason, at: now };
    const fields = {
      pool: c.spec.name,
      direction: d.direction,
      current: d.current,
      desired: d.desired,
      starting: c.starting.length,
      draining: c.draining.size,
      sample: {
        queued: sample.queued,
        busy: sample.busy,
        executors: sample.executors,
        arrivalRate: sample.arrivalRate,
        completionRate: sample.completionRate,
        meanActionSeconds: sample.meanActionSeconds,
      },
      inputs: d.inputs,
      reason: d.reason,
    };
    if (d.direction !== 'hold') {
      c.lastChange = c.last;
      this.o.log.info(fields, 'autoscale decision');
    } else if (now - c.lastHoldLogged >= (this.o.holdLogEveryMs ?? 60_000)) {
      c.lastHoldLogged = now;
      this.o.log.info(fields, 'autoscale decision');
    } else this.o.log.debug(fields, 'autoscale decision');
  }

  /**
   * Carries a decision out, and stops workers drained earlier that now
   * execute nothing. A provider that fails leaves the policy's cooldown
   * as it was, so the next tick decides (and tries) again.
   */
  private act(
    c: PoolControl,
    d: Decision,
    mine: readonly WorkerGroup[],
    busyIds: ReadonlySet<string>,
    previous: PolicyState,
    now: number,
  ): Promise<void> | undefined {
    const { provider } = c.spec;
    const pool = poolKey(c.spec.properties);
    const idleIn = (busy: ReadonlySet<string>) => (g: WorkerGroup) => g.slots.every((s) => !busy.has(s.id));
    const idle = idleIn(busyIds);
    const steps: (() => Promise<void>)[] = [];
    if (d.direction === 'up') {
      const n = d.desired - d.current;
      steps.push(async () => {
        try {
          const added = await provider.add(pool, n);
          for (const w of added) c.starting.push({ name: w.name, at: now });
          this.o.log.info({ pool: c.spec.name, workers: added.map((w) => w.name) }, 'autoscale: workers asked for');
        } catch (e) {
          this.o.log.error({ err: e, pool: c.spec.name, provider: provider.kind, count: n }, 'autoscale: adding workers failed; trying again next tick');
          c.state = withCooldowns(c.state, previous);
        }
      });
    } else if (d.direction === 'down') {
      const n = d.current - d.desired;
      const candidates = (groups: readonly WorkerGroup[], isIdle: (g: WorkerGroup) => boolean) =>
        pickIdle(
          groups.filter((g) => !g.draining && !c.draining.has(g.name) && isIdle(g)),
          Number.POSITIVE_INFINITY,
          this.o.scheduler.completedByExecutor(),
        );
      const take = (chosen: readonly WorkerGroup[]) => {
        if (chosen.length < n)
          this.o.log.info({ pool: c.spec.name, wanted: n, idle: chosen.length }, 'autoscale: fewer idle workers than the decision removes; busy ones stay');
        // Nothing removed: the cooldown has not started, so the next tick may try again.
        if (chosen.length === 0) c.state = withCooldowns(c.state, previous);
        // Synchronous with the idleness check before it: the dispatcher cannot assign them anything in between.
        for (const g of chosen) if (this.o.drain(g.name)) c.draining.set(g.name, { since: now });
        if (chosen.length > 0) this.o.log.info({ pool: c.spec.name, workers: chosen.map((g) => g.name) }, 'autoscale: workers taken out of rotation');
      };
      if (!provider.removable) take(candidates(mine, idle).slice(0, n));
      else {
        // Some providers can only remove certain workers (a StatefulSet its highest ordinals). Asking takes a
        // round trip, after which idleness is looked at again: only a prefix of the provider's order that is
        // still idle goes, since skipping one would leave a gap the provider cannot remove.
        const removable = provider.removable.bind(provider);
        steps.push(async () => {
          let allowed: string[];
          try {
            allowed = await removable(
              pool,
              candidates(mine, idle).map((g) => g.name),
            );
          } catch (e) {
            this.o.log.error({ err: e, pool: c.spec.name, provider: provider.kind }, 'autoscale: asking which workers can go failed; trying again next tick');
            c.state = withCooldowns(c.state, previous);
            return;
          }
          const busyNow = new Set(this.o.scheduler.assignments().keys());
          const stillIdle = new Map(
            candidates(
              this.o.workers().filter((g) => c.owns(g.name)),
              idleIn(busyNow),
            ).map((g) => [g.name, g]),
          );
          const chosen: WorkerGroup[] = [];
          for (const name of allowed) {
            const g = stillIdle.get(name);
            if (!g || chosen.length === n) break;
            chosen.push(g);
          }
          take(chosen);
        });
      }
    }
    // Out of rotation and executing nothing: nothing can reach them any more, so stopping them loses nothing.
    const byName = new Map(mine.map((g) => [g.name, g]));
    const names = [...c.draining]
      .filter(([name, dr]) => {
        const g = byName.get(name);
        return dr.removedAt === undefined && g !== undefined && idle(g);
      })
      .map(([name]) => name);
    if (names.length > 0) {
      steps.push(async () => {
        try {
          await provider.remove(pool, names);
          for (const name of names) {
            const dr = c.draining.get(name);
            if (dr) dr.removedAt = this.clock.now();
          }
          this.o.log.info({ pool: c.spec.name, workers: names }, 'autoscale: drained workers stopped');
        } catch (e) {
          this.o.log.error({ err: e, pool: c.spec.name, workers: names }, 'autoscale: stopping drained workers failed; trying again next tick');
        }
      });
    }
    if (steps.length === 0) return undefined;
    c.busy = true;
    return (async () => {
      try {
        for (const step of steps) await step();
      } finally {
        c.busy = false;
      }
    })();
  }

  /**
   * Workers the provider already runs (a StatefulSet's pods when the
   * scheduler restarts, or before its first pod has registered) count as
   * starting until they register or the start timeout passes: without this
   * the first tick would see an empty pool and add workers on top of them.
   */
  private async adopt(c: PoolControl): Promise<void> {
    c.adopted = true;
    const now = this.clock.now();
    try {
      const listed = await c.spec.provider.list(poolKey(c.spec.properties));
      const connected = new Set(this.o.workers().map((g) => g.name));
      const waiting = listed.filter((w) => c.owns(w.name) && !connected.has(w.name) && !c.starting.some((s) => s.name === w.name));
      for (const w of waiting) c.starting.push({ name: w.name, at: now });
      if (waiting.length > 0)
        this.o.log.info({ pool: c.spec.name, workers: waiting.map((w) => w.name) }, 'autoscale: workers the provider runs, not registered yet');
    } catch (e) {
      this.o.log.warn(
        { err: e, pool: c.spec.name, provider: c.spec.provider.kind },
        'autoscale: could not list the provider’s workers; counting only those registered',
      );
    }
  }

  /**
   * Workers asked for that registered are started: by name, or for a name
   * known only once it registers, any worker of the pool first seen after it
   * was asked for. Those that never register are given up on after the start timeout.
   */
  private settleStarting(c: PoolControl, mine: readonly WorkerGroup[], now: number): void {
    const connected = new Set(mine.map((g) => g.name));
    for (const name of c.seen.keys()) if (!connected.has(name)) c.seen.delete(name);
    for (const name of connected) if (!c.seen.has(name)) c.seen.set(name, { at: now, claimed: false });
    const claim = (name: string) => {
      const s = c.seen.get(name);
      if (s) s.claimed = true;
    };
    c.starting = c.starting.filter((w) => {
      if (w.name !== '') {
        if (!connected.has(w.name)) return true;
        claim(w.name);
        return false;
      }
      // Seen at a later tick than the one that asked: workers connected before do not count.
      const newcomer = [...c.seen].find(([, s]) => !s.claimed && s.at > w.at);
      if (!newcomer) return true;
      claim(newcomer[0]);
      return false;
    });
    const timeout = this.o.startTimeoutMs ?? 5 * 60_000;
    c.starting = c.starting.filter((w) => {
      if (now - w.at <= timeout) return true;
      this.o.log.warn(
        { pool: c.spec.name, worker: w.name || '(unnamed)', seconds: Math.round((now - w.at) / 1000) },
        'autoscale: a worker asked for never registered; no longer counted',
      );
      return false;
    });
  }

  /** Drained workers that left are forgotten; one the provider stopped that lingers is logged once. */
  private settleDraining(c: PoolControl, mine: readonly WorkerGroup[], now: number): void {
    const timeout = this.o.stopTimeoutMs ?? 2 * 60_000;
    for (const [name, dr] of c.draining) {
      if (!mine.some((g) => g.name === name)) c.draining.delete(name);
      else if (dr.removedAt !== undefined && now - dr.removedAt > timeout) {
        this.o.log.warn({ pool: c.spec.name, worker: name }, 'autoscale: a stopped worker is still connected; asking its provider again');
        dr.removedAt = undefined;
      }
    }
  }

  status(): PoolStatus[] {
    const groups = this.o.workers();
    return this.controls.map((c) => {
      const mine = groups.filter((g) => c.owns(g.name));
      return {
        name: c.spec.name,
        provider: c.spec.provider.kind,
        workers: mine.filter((g) => !g.draining && !c.draining.has(g.name)).length,
        starting: c.starting.length,
        draining: c.draining.size,
        desired: c.desired,
        predicted: c.predicted,
        ...(c.last ? { last: c.last } : {}),
        ...(c.lastChange ? { lastChange: c.lastChange } : {}),
        decisions: { ...c.decisions },
      };
    });
  }

  /** Stops ticking; the workers stay (a server restarting keeps its pool). Closes the providers. */
  async close(): Promise<void> {
    this.closed = true;
    this.cancelTick?.();
    await this.ticking;
    for (const p of this.o.pools) await p.provider.close();
  }
}

/**
 * The idle workers to remove: fewest results delivered first, since theirs
 * are the coldest caches and the least proven; among equals the newest
 * connected, for the same reason.
 */
function pickIdle(idle: readonly WorkerGroup[], n: number, done: ReadonlyMap<string, number>): WorkerGroup[] {
  const delivered = (g: WorkerGroup) => g.slots.reduce((k, s) => k + (done.get(s.id) ?? 0), 0);
  return [...idle].sort((a, b) => delivered(a) - delivered(b) || b.connected.getTime() - a.connected.getTime()).slice(0, Math.max(0, n));
}

/** The decision's smoothing kept, its cooldown stamps those of before: the change did not happen. */
function withCooldowns(next: PolicyState, previous: PolicyState): PolicyState {
  const { lastScaleUpAt: _u, lastScaleDownAt: _d, ...rest } = next;
  return {
    ...rest,
    ...(previous.lastScaleUpAt !== undefined ? { lastScaleUpAt: previous.lastScaleUpAt } : {}),
    ...(previous.lastScaleDownAt !== undefined ? { lastScaleDownAt: previous.lastScaleDownAt } : {}),
  };
}

/** A pool's properties as one string, `name=value` sorted and joined by commas ('' for none): the PoolKey providers get. */
export function poolKey(properties: Readonly<Record<string, readonly string[]>>): string {
  return Object.entries(properties)
    .flatMap(([k, vs]) => vs.map((v) => `${k}=${v}`))
    .sort()
    .join(',');
}
