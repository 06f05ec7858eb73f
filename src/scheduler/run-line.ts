import { Code, ReprError } from '../common/errors.js';
import type { ExecutorSlot, HeldExecutor } from '../executor/executor-slot.js';
import { type Requirement, unmet } from '../executor/platform.js';
import { type ExecutorPool, unsatisfiable } from './executor-pool.js';

interface RunWaiter {
  requirements: readonly Requirement[];
  label: string;
  resolve(h: HeldExecutor): void;
  reject(e: Error): void;
}

/**
 * `repr run`s waiting to hold one of this process's executors. They go
 * before queued actions (a person is waiting on them), whichever queue the
 * actions are in; a run holds its executor until it releases it.
 */
export class RunLine {
  private readonly waiters: RunWaiter[] = [];

  constructor(
    private readonly pool: ExecutorPool,
    /** Called when an executor comes free again: other work may take it. */
    private readonly onRelease: () => void,
    /** Called when a run starts waiting: something must look for stragglers. */
    private readonly onWait: () => void,
  ) {}

  get length(): number {
    return this.waiters.length;
  }

  /**
   * Waits for an idle executor that can carry out `repr run`s and satisfies
   * the requirements, and holds it until released. Fails at once with
   * FAILED_PRECONDITION when no executor could ever take it.
   */
  acquire(requirements: readonly Requirement[], label: string, signal: AbortSignal): Promise<HeldExecutor> {
    const why = this.pool.unsatisfiable(requirements, true);
    if (why) return Promise.reject(new ReprError(Code.FAILED_PRECONDITION, `no executor can run this command; unmet: ${why.join(', ')}`));
    return new Promise<HeldExecutor>((resolve, reject) => {
      const w: RunWaiter = { requirements, label, resolve, reject };
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

  /** Gives idle executors to waiting runs, first come first served among those an executor suits. */
  serve(): void {
    const { pool } = this;
    for (let wi = 0; wi < this.waiters.length && pool.idle.length > 0; ) {
      const w = this.waiters[wi]!;
      const slot = pool.idle.find((s) => s.run !== undefined && unmet(w.requirements, s.caps).length === 0);
      if (!slot) {
        wi++;
        continue;
      }
      this.waiters.splice(wi, 1);
      this.hold(slot, w);
    }
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
