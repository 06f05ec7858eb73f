import { createHash } from 'node:crypto';
import { Backoff } from '../common/backoff.js';
import type { SchedulerEndpoint } from './scheduler-endpoints.js';

/** How an attempt at one scheduler ended, as far as choosing the next one goes. */
export type AttemptEnd =
  /** Its stream broke or it closed it: the scheduler died, restarted or dropped the worker. */
  | 'lost'
  /** No connection, or the call failed before the scheduler took the worker. */
  | 'unreachable'
  /** It refused the worker's credentials or role: nothing changes there until an operator acts. */
  | 'credentials'
  /** It is no repr scheduler at all (a cache-only server, a web server). */
  | 'not-a-scheduler';

export type Verdict =
  /** Another scheduler of the list is still untried since the last registration or wait: try it at once. */
  | { next: 'now' }
  /** Every scheduler failed in a row: wait this long, then start another round. */
  | { next: 'later'; delayMs: number; tried: string[] }
  /** Every scheduler of the round is not a repr scheduler: retrying cannot help. */
  | { next: 'never'; tried: string[] };

/** The longest wait between rounds: how late a worker may notice that a scheduler is back. */
const RETRY_CAP_MS = 30_000;
/** Every scheduler refused the credentials: no round sooner than this. */
export const CREDENTIALS_RETRY_MS = 30_000;

/**
 * Where in the list a worker named `name` starts: a hash, so that a fleet of
 * differently named workers spreads over the schedulers as a random pick
 * would, while each worker starts at the same one every time (its logs and
 * the schedulers' read the same after a restart, and a test can pick it).
 */
export function startingPoint(name: string): number {
  return createHash('sha256').update(name).digest().readUInt32BE(0);
}

/**
 * Which scheduler a worker tries next and how long it waits first. A
 * scheduler lost or unreachable sends the worker to the next one of the
 * list at once; only when every one of them failed in a row does it wait,
 * with a delay that grows per such round (jittered, as Backoff does) and
 * starts over once a scheduler takes the worker. The list may change
 * between attempts (DNS); the round goes on from where it was.
 */
export class SchedulerRotation {
  private readonly backoff: Backoff;
  private endpoints: readonly SchedulerEndpoint[] = [];
  private at = 0;
  /** How each scheduler tried since the last registration or wait ended, by target. */
  private readonly round = new Map<string, { label: string; end: AttemptEnd }>();

  constructor(o: { start: number; random?: () => number }) {
    this.backoff = new Backoff({ initialMs: 250, maxMs: RETRY_CAP_MS, ...(o.random ? { random: o.random } : {}) });
    this.at = o.start;
  }

  /** The scheduler to try now, from the list as just resolved. */
  next(endpoints: readonly SchedulerEndpoint[]): SchedulerEndpoint {
    const n = endpoints.length;
    if (n === 0) throw new Error('no scheduler to try');
    const mod = (i: number) => ((i % n) + n) % n;
    if (this.endpoints.length === 0) {
      this.endpoints = endpoints;
      this.at = mod(this.at);
      return endpoints[this.at]!;
    }
    const last = this.endpoints[this.at]!;
    const found = endpoints.findIndex((e) => e.target === last.target);
    // Gone from the list: whatever now stands in its place comes next.
    const from = found >= 0 ? found : this.at - 1;
    this.endpoints = endpoints;
    let pick = mod(from + 1);
    for (let k = 1; k <= n; k++) {
      const i = mod(from + k);
      if (!this.round.has(endpoints[i]!.target)) {
        pick = i;
        break;
      }
    }
    this.at = pick;
    return endpoints[pick]!;
  }

  /** How the attempt at the scheduler `next` returned last ended; `registered`: it had taken the worker. */
  ended(end: AttemptEnd, registered: boolean): Verdict {
    const endpoint = this.endpoints[this.at];
    if (!endpoint) throw new Error('ended() before next()');
    if (registered) {
      // A new round, in which the scheduler just lost has had its turn.
      this.backoff.reset();
      this.round.clear();
    }
    this.round.set(endpoint.target, { label: endpoint.label, end });
    if (this.endpoints.some((e) => !this.round.has(e.target))) return { next: 'now' };
    const ends = [...this.round.values()];
    this.round.clear();
    const tried = ends.map((e) => e.label);
    if (ends.every((e) => e.end === 'not-a-scheduler')) return { next: 'never', tried };
    const delayMs = this.backoff.next();
    // Not fatal: the fix (a grant, a token added) is on the schedulers' side and a fleet should not need restarting after it.
    if (ends.every((e) => e.end === 'credentials')) return { next: 'later', delayMs: Math.max(delayMs, CREDENTIALS_RETRY_MS), tried };
    return { next: 'later', delayMs, tried };
  }
}
