/**
 * Delays between retries of something that failed for reasons that may
 * pass (a scheduler restarting, a network cut): exponential so that a long
 * outage costs few attempts, capped so that recovery is noticed soon after
 * it happens, and jittered so that a fleet of clients cut off together does
 * not come back in lockstep.
 */
export interface BackoffOptions {
  initialMs: number;
  maxMs: number;
  /** Growth per failure; default 2. */
  multiplier?: number;
  /** Each delay is spread uniformly over ±this fraction of its nominal value; default 0.2. */
  jitter?: number;
  /** In [0, 1); default Math.random. */
  random?: () => number;
}

export class Backoff {
  private nominal: number;

  constructor(private readonly o: BackoffOptions) {
    this.nominal = o.initialMs;
  }

  /** The delay before the next attempt; each call lengthens the one after, up to the cap. */
  next(): number {
    const jitter = this.o.jitter ?? 0.2;
    const spread = 1 - jitter + 2 * jitter * (this.o.random ?? Math.random)();
    const delay = Math.round(Math.min(this.o.maxMs, this.nominal * spread));
    this.nominal = Math.min(this.o.maxMs, this.nominal * (this.o.multiplier ?? 2));
    return delay;
  }

  /** After a success: the next failure is retried soon again. */
  reset(): void {
    this.nominal = this.o.initialMs;
  }
}
