import type { Clock } from '../common/clock.js';
import { Code, ReprError } from '../common/errors.js';

export interface RunDeadlineOptions {
  timeoutMs: number;
  clock: Clock;
  /** How long past the deadline the run may stay busy before `backstop` is called. */
  backstopAfterMs: number;
  /** Frees whatever still holds the run (its FUSE connection). */
  backstop: () => void;
}

/**
 * The end of one run as a single signal: the caller's cancel or the
 * deadline, whichever comes first. The deadline bounds the whole time the
 * run holds its executor, not only the command's: a command blocked in the
 * mount on a question the client never answers cannot be killed (it sleeps
 * uninterruptibly in the kernel until FUSE answers), so every wait on the
 * client or the CAS ends at this signal too. Past it, the run's questions
 * fail at once, which frees such a command; one still busy later is held by
 * something else (a hung helper, a blocked fetch), which the backstop ends.
 */
export class RunDeadline {
  private readonly stop = new AbortController();
  private expired = false;
  private readonly cancelTimer: () => void;
  private cancelBackstop?: () => void;
  private readonly onCancel = () => this.stop.abort(new ReprError(Code.CANCELLED, 'run cancelled'));

  constructor(
    private readonly cancel: AbortSignal,
    o: RunDeadlineOptions,
  ) {
    if (cancel.aborted) this.onCancel();
    else cancel.addEventListener('abort', this.onCancel, { once: true });
    this.cancelTimer = o.clock.setTimeout(() => {
      this.expired = true;
      this.stop.abort(new ReprError(Code.DEADLINE_EXCEEDED, `run timed out after ${o.timeoutMs} ms`));
      this.cancelBackstop = o.clock.setTimeout(o.backstop, o.backstopAfterMs);
    }, o.timeoutMs);
  }

  /** Aborted at the run's end, with a ReprError saying why. */
  get signal(): AbortSignal {
    return this.stop.signal;
  }

  get timedOut(): boolean {
    return this.expired;
  }

  get cancelled(): boolean {
    return this.cancel.aborted;
  }

  /** The run is over: no timer of it may fire during or after its cleanup. */
  dispose(): void {
    this.cancelTimer();
    this.cancelBackstop?.();
    this.cancel.removeEventListener('abort', this.onCancel);
  }

  /** `p`, or this signal's reason as soon as it fires: nothing of a run waits past its end. */
  until<T>(p: Promise<T>): Promise<T> {
    const stop = this.stop.signal;
    if (stop.aborted) {
      p.catch(() => undefined);
      return Promise.reject(stop.reason as Error);
    }
    return new Promise<T>((resolve, reject) => {
      const onStop = () => reject(stop.reason as Error);
      stop.addEventListener('abort', onStop, { once: true });
      p.then(
        (v) => {
          stop.removeEventListener('abort', onStop);
          resolve(v);
        },
        (e: unknown) => {
          stop.removeEventListener('abort', onStop);
          reject(e as Error);
        },
      );
    });
  }

  /** Throws the reason if the run is already over. */
  throwIfOver(): void {
    if (this.stop.signal.aborted) throw this.stop.signal.reason;
  }
}
