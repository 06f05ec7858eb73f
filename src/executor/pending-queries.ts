import { Code, ReprError } from '../common/errors.js';
import { Node, type NodeReply } from '../proto/repr/run/v1/run.js';

/**
 * A run's questions to its client that await an answer: each gets a number,
 * is sent, and is settled by the reply carrying that number. The server (for
 * built-in executors) and a worker (whose questions the scheduler relays)
 * both ask this way. Once the run is aborted, questions are refused and those
 * waiting are rejected, so nothing waits for an answer that cannot come.
 */
export class PendingQueries {
  private next = 1;
  private readonly waiting = new Map<number, { resolve(n: Node): void; reject(e: Error): void }>();

  constructor(
    private readonly send: (queryId: number, path: string, list: boolean) => void,
    private readonly signal: AbortSignal,
    /** Put before the client's own message when it reports an error. */
    private readonly errorPrefix = '',
  ) {
    signal.addEventListener('abort', () => this.rejectAll('run cancelled'), { once: true });
  }

  ask(path: string, list: boolean): Promise<Node> {
    return new Promise<Node>((resolve, reject) => {
      if (this.signal.aborted) return reject(new ReprError(Code.CANCELLED, 'run cancelled'));
      const queryId = this.next++;
      this.waiting.set(queryId, { resolve, reject });
      this.send(queryId, path, list);
    });
  }

  /** Settles the question a reply answers; a late reply (the run has ended) is dropped. */
  settle(r: NodeReply): void {
    const q = this.waiting.get(r.queryId);
    if (!q) return;
    this.waiting.delete(r.queryId);
    if (r.error && r.error.code !== Code.OK) q.reject(new ReprError(r.error.code, `${this.errorPrefix}${clip(r.error.message)}`));
    else q.resolve(r.node ?? Node.fromPartial({}));
  }

  rejectAll(why: string): void {
    for (const q of this.waiting.values()) q.reject(new ReprError(Code.CANCELLED, why));
    this.waiting.clear();
  }
}

/** The client's words end up in the worker's logs; a few lines of them are enough. */
const MAX_ERROR_CHARS = 1024;

function clip(s: string): string {
  return s.length > MAX_ERROR_CHARS ? `${s.slice(0, MAX_ERROR_CHARS)}...` : s;
}
