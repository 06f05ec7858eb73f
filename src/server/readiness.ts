import type { Logger } from '../common/logger.js';

/**
 * Whether the server should be sent work: ready once every named condition
 * has been met, and never again once it drains (stop() began). Work that
 * finishes after the port is open (listening itself, an index built in the
 * background) joins with one `add`; the health service follows `onChange`.
 */
export class Readiness {
  private readonly pending = new Set<string>();
  private readonly listeners = new Set<(ready: boolean) => void>();
  private draining = false;
  /** What listeners were last told; with no conditions yet, ready. */
  private last = true;

  constructor(private readonly log: Logger) {}

  get ready(): boolean {
    return !this.draining && this.pending.size === 0;
  }

  /** Conditions not met yet (for logs and status pages). */
  get waitingFor(): string[] {
    return [...this.pending];
  }

  /**
   * Not ready until `condition` resolves. One that rejects keeps the server
   * not ready and is logged: a half-started server must not be sent work.
   * Once draining it is not: stopping cancels unfinished work (an index),
   * which is no failure. `consequence` says what the failure means for
   * whoever reads the log.
   */
  add(name: string, condition: Promise<unknown>, consequence?: string): void {
    const met = this.hold(name);
    condition.then(met, (err: unknown) => {
      if (!this.draining) this.log.error({ err, condition: name }, `not ready: ${name} failed${consequence ? `; ${consequence}` : ''}`);
    });
  }

  /** Not ready until the returned function is called. */
  hold(name: string): () => void {
    this.pending.add(name);
    this.changed();
    return () => {
      this.pending.delete(name);
      this.changed();
    };
  }

  /** Not ready from now on: the server is stopping. */
  drain(): void {
    this.draining = true;
    this.changed();
  }

  /** Calls `fn` with the current state now and on every change; returns how to stop. */
  onChange(fn: (ready: boolean) => void): () => void {
    this.listeners.add(fn);
    fn(this.ready);
    return () => this.listeners.delete(fn);
  }

  private changed(): void {
    const now = this.ready;
    if (now === this.last) return;
    this.last = now;
    for (const fn of this.listeners) fn(now);
  }
}
