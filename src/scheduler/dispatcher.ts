import type { Clock } from '../common/clock.js';
import { Code, codeOf, toStatus } from '../common/errors.js';
import type { Logger } from '../common/logger.js';
import { childContext, endSpan, startSpan } from '../common/tracing.js';
import { ExecutorLostError, type ExecutorSlot, type HeldExecutor } from '../executor/executor-slot.js';
import { RunLine } from './run-line.js';
import { type Requirement, unmet } from '../executor/platform.js';
import { ExecuteResponse, ExecutionStage_Value } from '../proto/build/bazel/remote/execution/v2/remote_execution.js';
import { ActionQueue } from './action-queue.js';
import { type ExecutorPool, unsatisfiable } from './executor-pool.js';
import type { LiveOperation, OperationBook } from './operation-book.js';
import type { ResultCache } from './result-cache.js';
import type { LoadLog } from './pool-load.js';

/** How often work that no executor can take any more is looked for, while any waits. */
const SWEEP_INTERVAL_MS = 1000;

export interface DispatcherOptions {
  pool: ExecutorPool;
  book: OperationBook;
  results: ResultCache;
  clock: Clock;
  log: Logger;
  /** Times an action is re-queued after its executor was lost before it fails. */
  maxAttempts: number;
  /** Where finished executions are noted for an autoscaler. */
  load: LoadLog;
}

/**
 * Hands idle executors their work: `repr run`s waiting to hold one and
 * queued actions take turns by owner (FairShare), a run first when its owner
 * waited as long (a person is waiting on it); each goes to an executor that
 * satisfies its platform on the least busy worker (ExecutorPool.pick). An
 * action whose executor is lost goes back in line, up to maxAttempts
 * executions; work that no executor, present or within its grace, can take
 * any more fails.
 */
export class Dispatcher {
  private readonly queue = new ActionQueue();
  private readonly runs: RunLine;
  private readonly counters = { completed: 0, requeued: 0 };
  /** Set while the sweep timer is armed: only while something waits. */
  private cancelSweep: (() => void) | undefined;
  private closed = false;

  constructor(private readonly o: DispatcherOptions) {
    this.runs = new RunLine(
      o.pool,
      () => this.dispatch(),
      () => this.armSweep(),
    );
  }

  get queueDepth(): number {
    return this.queue.length;
  }

  /** The requirements of every waiting action. */
  waitingRequirements(): (readonly Requirement[])[] {
    return this.queue.waiting().map((op) => op.req.requirements);
  }

  /** Results accepted, actions put back in line after losing their executor, results kept out of the action cache. */
  stats(): { completed: number; requeued: number; untrustedResults: number } {
    return { ...this.counters, untrustedResults: this.o.results.untrusted };
  }

  enqueue(op: LiveOperation): void {
    op.queueSpan = startSpan('queue', op.req.trace, { 'repr.operation': op.state.name, 'repr.attempt': op.attempts + 1 });
    this.queue.insert(op);
    this.armSweep();
    this.dispatch();
  }

  /** Holds an executor for a `repr run`; see RunLine.acquire. */
  acquire(requirements: readonly Requirement[], label: string, owner: string, signal: AbortSignal): Promise<HeldExecutor> {
    return this.runs.acquire(requirements, label, owner, signal);
  }

  /** Stops an unfinished operation: a queued one finishes as cancelled at once, an executing one is aborted. */
  cancel(op: LiveOperation): void {
    op.cancelled = true;
    if (this.queue.remove(op)) {
      dequeued(op, 'cancelled while queued');
      this.o.book.finish(op, cancelledResponse());
    } else op.abort?.abort();
  }

  dispatch(): void {
    const { pool } = this.o;
    const fair = this.runs.fair;
    const fits = (op: LiveOperation) => (slot: ExecutorSlot) => unmet(op.req.requirements, slot.caps).length === 0;
    for (;;) {
      const run = this.runs.next();
      const op =
        this.queue.length === 0
          ? undefined
          : this.queue.next(
              (o) => pool.idle.some(fits(o)),
              (o) => fair.earliest(o.owners),
            );
      if (!run && !op) return;
      if (run && (!op || fair.lastServed(run.owner) <= fair.earliest(op.owners))) {
        run.take();
        continue;
      }
      this.queue.remove(op!);
      fair.served(op!.owners);
      void this.execute(pool.pick(fits(op!))!, op!);
    }
  }

  close(): void {
    this.closed = true;
    this.cancelSweep?.();
    this.cancelSweep = undefined;
  }

  /** Executes a queued operation on a claimed executor; called synchronously from dispatch. */
  private async execute(slot: ExecutorSlot, op: LiveOperation): Promise<void> {
    const { pool, book, log } = this.o;
    dequeued(op);
    op.abort = new AbortController();
    op.attempts++;
    pool.claim(slot, { operationName: op.state.name, actionDigest: op.req.actionDigest });
    const started = this.o.clock.now();
    book.transition(op, ExecutionStage_Value.EXECUTING);
    // Spans the time on the executor, transport to a worker included; its phases go under it, on a worker too.
    const span = startSpan('execute', op.req.trace, { 'repr.executor': slot.id, 'repr.attempt': op.attempts });
    let response: ExecuteResponse | undefined;
    try {
      const trace = childContext(op.req.trace, span);
      response = await slot.execute({ ...op.req, operationName: op.state.name, queuedAt: op.queuedAt, ...(trace ? { trace } : {}) }, op.abort.signal);
      span?.setAttribute('repr.status_code', response.status?.code ?? Code.OK);
      endSpan(span);
      if (op.cancelled) response = { ...cancelledResponse(), result: response.result };
    } catch (e) {
      endSpan(span, e);
      if (e instanceof ExecutorLostError && !op.cancelled && op.attempts < this.o.maxAttempts) {
        log.warn({ op: op.state.name, executor: slot.id, attempt: op.attempts, reason: e.message }, 'executor lost; re-queueing the action');
        this.counters.requeued++;
      } else if (op.cancelled) {
        response = cancelledResponse();
      } else {
        if (!(e instanceof ExecutorLostError) && codeOf(e) !== Code.FAILED_PRECONDITION)
          log.error({ err: e, op: op.state.name, executor: slot.id }, 'executor failed');
        const status =
          e instanceof ExecutorLostError
            ? toStatus(e, `gave up after ${op.attempts} executors were lost executing it; last`)
            : toStatus(e, `executor ${slot.id}`);
        response = ExecuteResponse.fromPartial({ status });
      }
    } finally {
      // A removed executor (lost or draining) gets no more work.
      pool.free(slot);
    }
    if (!response) {
      // Back in line at its original place: it has waited already.
      op.abort = undefined;
      book.transition(op, ExecutionStage_Value.QUEUED);
      this.enqueue(op);
      this.dispatch();
      return;
    }
    await this.o.results.record({ ...op.req, name: op.state.name }, response, slot.owner);
    this.counters.completed++;
    pool.credit(slot);
    this.o.load.executed(slot.caps, this.o.clock.now() - started);
    book.finish(op, response);
    this.dispatch();
  }

  private armSweep(): void {
    if (this.cancelSweep || this.closed) return;
    this.cancelSweep = this.o.clock.setTimeout(() => {
      this.cancelSweep = undefined;
      this.failUnsatisfiable();
      if (this.runs.length > 0 || this.queue.length > 0) this.armSweep();
    }, SWEEP_INTERVAL_MS);
  }

  /** Fails waiting work that no executor (present, or gone but within its grace) can take. */
  private failUnsatisfiable(): void {
    const { pool, book } = this.o;
    this.runs.failUnsatisfiable();
    if (this.queue.length === 0) return;
    const caps = pool.capabilities();
    for (const op of this.queue.waiting()) {
      const why = unsatisfiable(op.req.requirements, caps);
      if (!why) continue;
      this.queue.remove(op);
      dequeued(op, 'no executor can execute it any more');
      book.finish(
        op,
        ExecuteResponse.fromPartial({
          status: { code: Code.FAILED_PRECONDITION, message: `no executor can execute this action any more; unmet platform properties: ${why.join(', ')}` },
        }),
      );
    }
  }
}

/** Ends the wait an operation's queue span measures; with `failure` when it leaves the line without an executor. */
function dequeued(op: LiveOperation, failure?: string): void {
  endSpan(op.queueSpan, failure);
  op.queueSpan = undefined;
}

function cancelledResponse(): ExecuteResponse {
  return ExecuteResponse.fromPartial({ status: { code: Code.CANCELLED, message: 'operation cancelled' } });
}
