import { Code, ReprError } from '../common/errors.js';
import type { ExecutorSlot, HeldExecutor } from '../executor/executor-slot.js';
import { type Requirement, unmet } from '../executor/platform.js';
import { type ExecutorPool, unsatisfiable } from './executor-pool.js';
import { FairShare } from './fair-share.js';

interface RunWaiter {
  requirements: readonly Requirement[];
  label: string;
  owner: string;
  resolve(h: HeldExecutor): void;
  reject(e: Error): void;
}

/** The run next in line that an idle executor can take; take() hands it the executor. */
export interface RunTurn {
  owner: string;
  take(): void;
}

/**
 * `repr run`s waiting to hold one of this process's executors; a run holds
 * its executor until it releases it. Owners take turns (FairShare), each
 * owner's runs in arrival order, and each run gets the executor on the least
 * busy worker (ExecutorPool.pick), so a build's burst of short runs spreads
 * over the farm and does not make another user's run wait for all of it.
 */
export class RunLine {
  private readonly waiters: RunWaiter[] = [];

  constructor(
    private readonly pool: ExecutorPool,
    /** Called when an executor comes free again: other work may take it. */
    private readonly onRelease: () => void,
    /** Called when a run starts waiting: something must look for stragglers. */
    private readonly onWait: () => void,
    /** Shared with the action queue's dispatcher where runs and actions take turns. */
    readonly fair = new FairShare(),
  ) {}

  get length(): number {
    return this.waiters.length;
  }

  /**
   * Waits for an idle executor that can carry out `repr run`s and satisfies
   * the requirements, and holds it until released. Fails at once with
   * FAILED_PRECONDITION when no executor could ever take it.
   */
  acquire(requirements: readonly Requirement[], label: string, owner: string, signal: AbortSignal): Promise<HeldExecutor> {
    const why = this.pool.unsatisfiable(requirements, true);
    if (why) return Promise.reject(new ReprError(Code.FAILED_PRECONDITION, `no executor can run this command; unmet: ${why.join(', ')}`));
    return new Promise<HeldExecutor>((resolve, reject) => {
      const w: RunWaiter = { requirements, label, owner, resolve, reject };
      const onAbort = () => {
        const i = this.waiters.indexOf(w);
        if (i >= 0) this.waiters.splice(i, 1);
        reject(new ReprError(Code.CANCELLED, 'cancelled while waiting for an executor'));
      };
      if (signal.aborted) return onAbort();
      signal.addEventListener('abort', onAbort, { once: true });
      w.resolve = (h) => {
        signal.removeEventListener('abort', onAbort);
        resolve(h);
      };
      this.waiters.push(w);
      this.onWait();
      this.serve();
    });
  }

  /** Gives idle executors to waiting runs until none fits; how many it gave. */
  serve(): number {
    let n = 0;
    for (let t = this.next(); t; t = this.next(), n++) t.take();
    return n;
  }

  /**
   * The waiting run an idle executor can take whose owner was served longest
   * ago (the earliest arrival among equals), with the executor it would get.
   */
  next(): RunTurn | undefined {
    const { pool } = this;
    if (pool.idle.length === 0) return undefined;
    let best: RunWaiter | undefined;
    let bestTurn = Number.POSITIVE_INFINITY;
    for (const w of this.waiters) {
      const turn = this.fair.lastServed(w.owner);
      // Checked second: most waiters of a burst share an owner and lose on the turn alone.
      if (turn < bestTurn && pool.idle.some((s) => fitsRun(w, s))) {
        best = w;
        bestTurn = turn;
      }
    }
    if (!best) return undefined;
    const w = best;
    return {
      owner: w.owner,
      take: () => {
        const slot = pool.pick((s) => fitsRun(w, s))!;
        this.waiters.splice(this.waiters.indexOf(w), 1);
        this.fair.served([w.owner]);
        this.hold(slot, w);
      },
    };
  }

  /** Fails waiting runs that no executor (present, or gone but within its grace) can take. */
  failUnsatisfiable(): void {
    if (this.waiters.length === 0) return;
    const runCaps = this.pool.capabilities(true);
    for (const w of [...this.waiters]) {
      const why = unsatisfiable(w.requirements, runCaps);
      if (!why) continue;
      this.waiters.splice(this.waiters.indexOf(w), 1);
      w.reject(new ReprError(Code.FAILED_PRECONDITION, `no executor can run this command any more; unmet: ${why.join(', ')}`));
    }
  }

  private hold(slot: ExecutorSlot, w: RunWaiter): void {
    this.pool.claim(slot, { operationName: w.label });
    let released = false;
    w.resolve({
      slot: slot as HeldExecutor['slot'],
      release: () => {
        if (released) return;
        released = true;
        this.pool.free(slot);
        this.pool.credit(slot);
        this.onRelease();
      },
    });
  }
}

function fitsRun(w: RunWaiter, s: ExecutorSlot): boolean {
  return s.run !== undefined && unmet(w.requirements, s.caps).length === 0;
}
