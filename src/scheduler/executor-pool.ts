import type { Clock } from '../common/clock.js';
import type { Digest } from '../common/digest.js';
import type { ExecutorSlot } from '../executor/executor-slot.js';
import { type ExecutorCapabilities, type Requirement, unmet } from '../executor/platform.js';

/** What a busy executor is doing: executing an action, or held for a `repr run`. */
export interface Assignment {
  /** An operation name, or `runs/<id>` for a `repr run`. */
  operationName: string;
  /** Unset for a `repr run`. */
  actionDigest?: Digest;
  started: Date;
}

/**
 * Reasons no executor with one of these capabilities can take the
 * requirements, for the one that misses the fewest; undefined if one can.
 */
export function unsatisfiable(reqs: readonly Requirement[], all: readonly ExecutorCapabilities[]): string[] | undefined {
  if (all.length === 0) return ['no executors are connected'];
  let best: string[] | undefined;
  for (const caps of all) {
    const why = unmet(reqs, caps);
    if (why.length === 0) return undefined;
    if (!best || why.length < best.length) best = why;
  }
  return best;
}

/**
 * The worker an executor belongs to. Executor ids are `<worker>/<index>`
 * (worker-service names a connected worker's, create-executors the server's
 * own), so the part before the last slash groups an executor with its
 * siblings, which share one machine's cores, disk and network.
 */
export function workerOf(slot: ExecutorSlot): string {
  const i = slot.id.lastIndexOf('/');
  return i < 0 ? slot.id : slot.id.slice(0, i);
}

/**
 * The executors the scheduler has: which are idle, what the busy ones do,
 * how much each has delivered, and what the ones that left lately offered.
 * It chooses among idle executors (pick, spread) but not what they get; the
 * dispatcher claims and frees executors.
 */
export class ExecutorPool {
  private readonly present: ExecutorSlot[] = [];
  private readonly idleSlots: ExecutorSlot[] = [];
  private readonly busy = new Map<ExecutorSlot, Assignment>();
  /** Capabilities of executors removed lately, and until when they still count. */
  private departed: { caps: ExecutorCapabilities; runs: boolean; until: number }[] = [];
  private readonly delivered = new Map<string, number>();
  /** When each worker was last given an executor's worth of work, in claims; ties of load go to the longest unpicked. */
  private readonly lastPicked = new Map<string, number>();
  private claims = 0;

  constructor(
    private readonly clock: Clock,
    /**
     * How long the capabilities of executors that went away still count: a
     * worker that restarts or reconnects must not make the builds that need
     * it fail in the meantime.
     */
    private readonly departedGraceMs: number,
  ) {}

  add(slot: ExecutorSlot): void {
    this.present.push(slot);
    this.idleSlots.push(slot);
  }

  /**
   * Takes an executor out of rotation: it gets no new work, and what it is
   * busy with goes on. Its capabilities count for the grace period.
   */
  remove(slot: ExecutorSlot): void {
    const i = this.present.indexOf(slot);
    if (i < 0) return;
    this.present.splice(i, 1);
    const j = this.idleSlots.indexOf(slot);
    if (j >= 0) this.idleSlots.splice(j, 1);
    this.departed.push({ caps: slot.caps, runs: slot.run !== undefined, until: this.clock.now() + this.departedGraceMs });
  }

  /** Idle executors, oldest idle first; a live view that claim() shortens. */
  get idle(): readonly ExecutorSlot[] {
    return this.idleSlots;
  }

  /** Marks an idle executor busy. */
  claim(slot: ExecutorSlot, work: Omit<Assignment, 'started'>): void {
    const i = this.idleSlots.indexOf(slot);
    if (i >= 0) this.idleSlots.splice(i, 1);
    this.busy.set(slot, { ...work, started: new Date(this.clock.now()) });
    this.lastPicked.set(workerOf(slot), ++this.claims);
  }

  /**
   * The idle executor that `fits` that is best to use now: one on the worker
   * with the smallest share of its executors busy, so that many short runs or
   * actions spread over every worker instead of filling the first one
   * registered; among equally loaded workers the one picked longest ago, so
   * consecutive picks rotate; on that worker, the executor idle longest.
   */
  pick(fits: (slot: ExecutorSlot) => boolean): ExecutorSlot | undefined {
    return this.best(this.idleSlots.filter(fits), this.loads());
  }

  /**
   * Idle executors in the order pick() would hand them out one after
   * another, for a caller that offers several at once and fills them in
   * order (SharedScheduler's claim).
   */
  spread(slots: readonly ExecutorSlot[]): ExecutorSlot[] {
    const loads = this.loads();
    const left = [...slots];
    const order: ExecutorSlot[] = [];
    const picked = new Map<string, number>();
    while (left.length > 0) {
      const next = this.best(left, loads, picked)!;
      left.splice(left.indexOf(next), 1);
      order.push(next);
      const w = workerOf(next);
      loads.get(w)!.busy++;
      picked.set(w, order.length);
    }
    return order;
  }

  /** Busy and present executors by worker. */
  private loads(): Map<string, { busy: number; total: number }> {
    const loads = new Map<string, { busy: number; total: number }>();
    const of = (s: ExecutorSlot) => {
      const w = workerOf(s);
      let l = loads.get(w);
      if (!l) loads.set(w, (l = { busy: 0, total: 0 }));
      return l;
    };
    for (const s of this.present) of(s).total++;
    // A removed executor still busy keeps its worker loaded until it finishes.
    for (const s of this.busy.keys()) of(s).busy++;
    return loads;
  }

  private best(
    candidates: readonly ExecutorSlot[],
    loads: Map<string, { busy: number; total: number }>,
    pickedNow: ReadonlyMap<string, number> = new Map(),
  ): ExecutorSlot | undefined {
    let best: ExecutorSlot | undefined;
    let bestLoad = Number.POSITIVE_INFINITY;
    let bestPicked = Number.POSITIVE_INFINITY;
    for (const s of candidates) {
      const w = workerOf(s);
      const l = loads.get(w)!;
      const load = l.busy / Math.max(l.total, 1);
      // Picks made within one spread() come after every earlier claim.
      const now = pickedNow.get(w);
      const last = now === undefined ? (this.lastPicked.get(w) ?? 0) : this.claims + now;
      if (load < bestLoad || (load === bestLoad && last < bestPicked)) {
        best = s;
        bestLoad = load;
        bestPicked = last;
      }
    }
    return best;
  }

  /** Ends an executor's work; it is idle again unless it was removed meanwhile. */
  free(slot: ExecutorSlot): void {
    this.busy.delete(slot);
    if (this.present.includes(slot)) this.idleSlots.push(slot);
  }

  /** Counts a result (or a finished `repr run`) toward the executor. */
  credit(slot: ExecutorSlot): void {
    this.delivered.set(slot.id, (this.delivered.get(slot.id) ?? 0) + 1);
  }

  get busyCount(): number {
    return this.busy.size;
  }

  /** Executors in rotation, each with whether it is busy. */
  census(): { caps: ExecutorCapabilities; busy: boolean }[] {
    return this.present.map((slot) => ({ caps: slot.caps, busy: this.busy.has(slot) }));
  }

  /** What each busy executor is doing, by executor id. */
  assignments(): Map<string, Assignment> {
    return new Map([...this.busy].map(([slot, a]) => [slot.id, a]));
  }

  /** Results each executor (by id) has delivered since the scheduler started. */
  completedByExecutor(): ReadonlyMap<string, number> {
    return this.delivered;
  }

  /** What present executors offer, and what departed ones still within their grace offered. */
  capabilities(forRuns = false): ExecutorCapabilities[] {
    const now = this.clock.now();
    this.departed = this.departed.filter((d) => d.until > now);
    const present = this.present.filter((e) => !forRuns || e.run).map((e) => e.caps);
    return [...present, ...this.departed.filter((d) => !forRuns || d.runs).map((d) => d.caps)];
  }

  /**
   * Why no executor can take these requirements, or undefined if one can.
   * Executors that left within the grace period count, so the work waits for
   * them to return.
   */
  unsatisfiable(reqs: readonly Requirement[], forRuns = false): string[] | undefined {
    return unsatisfiable(reqs, this.capabilities(forRuns));
  }
}
