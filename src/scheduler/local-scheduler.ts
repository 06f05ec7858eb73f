import { systemClock } from '../common/clock.js';
import type { Digest } from '../common/digest.js';
import type { ExecutorSlot, HeldExecutor } from '../executor/executor-slot.js';
import type { Requirement } from '../executor/platform.js';
import type { ExecuteResponse } from '../proto/build/bazel/remote/execution/v2/remote_execution.js';
import type { BlobStore } from '../storage/blob-store.js';
import type { OperationStore } from './operation-store.js';
import { Dispatcher } from './dispatcher.js';
import { type Assignment, ExecutorPool } from './executor-pool.js';
import { OperationBook, type OperationState, type SubmitRequest } from './operation-book.js';
import type { LocalSchedulerOptions, Scheduler, SchedulerCounters, SchedulerPeer } from './scheduler.js';
import { ResultCache } from './result-cache.js';
import { groupByRequirements, LoadLog, type PoolLabels, type PoolLoad } from './pool-load.js';

/**
 * Scheduling on one machine: operations (OperationBook, kept in SQLite), the
 * executors (ExecutorPool) and who gets which executor (Dispatcher), with
 * successful results written to the action cache (ResultCache). The queue
 * lives in this process's memory; SharedScheduler is the one for several.
 */
export class LocalScheduler implements Scheduler {
  private readonly pool: ExecutorPool;
  private readonly book: OperationBook;
  private readonly dispatcher: Dispatcher;
  private readonly cas: BlobStore;
  private readonly store: OperationStore;
  private readonly load: LoadLog;
  private staleResults = 0;

  constructor(o: LocalSchedulerOptions) {
    const clock = o.clock ?? systemClock;
    this.cas = o.cas;
    this.store = o.store;
    this.pool = new ExecutorPool(clock, o.departedGraceMs ?? 60_000);
    this.book = new OperationBook(o.store, clock, o.log);
    this.load = new LoadLog(clock);
    this.dispatcher = new Dispatcher({
      pool: this.pool,
      book: this.book,
      results: new ResultCache(o.actionCache, o.log),
      clock,
      log: o.log,
      maxAttempts: o.maxAttempts ?? 5,
      load: this.load,
    });
  }

  addExecutor(slot: ExecutorSlot): void {
    this.pool.add(slot);
    this.dispatcher.dispatch();
  }

  /**
   * Takes an executor out of rotation: it gets no new work. An action it is
   * executing goes on; if the executor cannot finish it, it rejects with
   * ExecutorLostError and the action is re-queued.
   */
  removeExecutor(slot: ExecutorSlot): void {
    this.pool.remove(slot);
  }

  get queueDepth(): number {
    return this.dispatcher.queueDepth;
  }

  /** Executors executing an action or held for a `repr run`. */
  get busyExecutors(): number {
    return this.pool.busyCount;
  }

  /** Counts the in-memory queue: one pass over it per call. */
  poolLoad(pools: readonly PoolLabels[], since: number): PoolLoad[] {
    return this.load.poolLoad(pools, since, groupByRequirements(this.dispatcher.waitingRequirements()), this.pool.census());
  }

  /** What each busy executor is doing, by executor id. */
  assignments(): Map<string, Assignment> {
    return this.pool.assignments();
  }

  /** Results each executor (by id) has delivered since the scheduler started. */
  completedByExecutor(): ReadonlyMap<string, number> {
    return this.pool.completedByExecutor();
  }

  stats(): SchedulerCounters {
    return { ...this.dispatcher.stats(), staleResults: this.staleResults, outcomes: this.book.outcomes };
  }

  /** Counts a result that came back for an execution the scheduler had already given up on. */
  noteStaleResult(): void {
    this.staleResults++;
  }

  /** Why no executor can take these requirements (departed ones within their grace count), or undefined if one can. */
  unsatisfiable(reqs: readonly Requirement[]): string[] | undefined {
    return this.pool.unsatisfiable(reqs);
  }

  /** Holds an executor for a `repr run` until released; see Dispatcher.acquire. */
  acquire(requirements: readonly Requirement[], label: string, owner: string, signal: AbortSignal): Promise<HeldExecutor> {
    return this.dispatcher.acquire(requirements, label, owner, signal);
  }

  /**
   * Queues an action for execution, or joins the identical one in flight;
   * either way `owner` (a principal, see Caller.owner) becomes one of the
   * operation's owners.
   */
  async submit(req: SubmitRequest, owner: string): Promise<OperationState> {
    const { op, fresh } = this.book.open(req, owner);
    if (fresh) {
      this.load.arrived(req.requirements);
      this.dispatcher.enqueue(op);
    }
    return op.state;
  }

  /** Records an operation that finished without executing (an action-cache hit), owned by `owner`. */
  async recordCompleted(instanceName: string, actionDigest: Digest, response: ExecuteResponse, owner: string): Promise<OperationState> {
    return this.book.recordCompleted(instanceName, actionDigest, response, owner);
  }

  /** Who started or joined an operation; scoped as get() is (empty for an unknown name). */
  async owners(name: string): Promise<readonly string[]> {
    return this.book.owners(name);
  }

  /** Current state; undefined unless the name carries the operation's own instance. */
  async get(name: string): Promise<OperationState | undefined> {
    return this.book.get(name);
  }

  /** Calls `fn` now with the current state and on every change until done; returns an unsubscribe function. */
  watch(name: string, fn: (s: OperationState) => void): () => void {
    return this.book.watch(name, fn);
  }

  /** One instance's operations whose names sort after `after`; only those `owner` owns, if given. */
  async list(instanceName: string, after: string, limit: number, owner?: string): Promise<OperationState[]> {
    return this.book.list(instanceName, after, limit, owner);
  }

  /** Cancels a queued or executing operation; false if it is unknown or already done. */
  async cancel(name: string): Promise<boolean> {
    const op = this.book.live(name);
    if (!op || op.state.response) return false;
    this.dispatcher.cancel(op);
    return true;
  }

  async delete(name: string): Promise<boolean> {
    if (!this.book.get(name)) return false;
    await this.cancel(name);
    return this.book.delete(name);
  }

  /** Re-queues what an earlier run of the server left unfinished. */
  recover(): Promise<number> {
    return this.book.recover(this.cas, (op) => this.dispatcher.enqueue(op));
  }

  async peers(): Promise<SchedulerPeer[]> {
    return [];
  }

  /** Stops dispatching and closes the operation store. */
  async close(): Promise<void> {
    this.dispatcher.close();
    this.store.close();
  }
}
