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
 * The executors the scheduler has: which are idle, what the busy ones do,
 * how much each has delivered, and what the ones that left lately offered.
 * It decides nothing; the dispatcher claims and frees executors.
 */
export class ExecutorPool {
  private readonly present: ExecutorSlot[] = [];
  private readonly idleSlots: ExecutorSlot[] = [];
  private readonly busy = new Map<ExecutorSlot, Assignment>();
  /** Capabilities of executors removed lately, and until when they still count. */
  private departed: { caps: ExecutorCapabilities; runs: boolean; until: number }[] = [];
  private readonly delivered = new Map<string, number>();

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
