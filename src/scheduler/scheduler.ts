import type { Clock } from '../common/clock.js';
import type { Digest } from '../common/digest.js';
import type { Logger } from '../common/logger.js';
import type { ExecutorSlot, HeldExecutor } from '../executor/executor-slot.js';
import type { Requirement } from '../executor/platform.js';
import type { ExecuteResponse } from '../proto/build/bazel/remote/execution/v2/remote_execution.js';
import type { ActionCache } from '../storage/action-cache.js';
import type { BlobStore } from '../storage/blob-store.js';
import type { OutcomeCounts } from './execution-outcome.js';
import type { Assignment } from './executor-pool.js';
import type { OperationState, SubmitRequest } from './operation-book.js';
import type { OperationStore } from './operation-store.js';
import type { PoolLabels, PoolLoad } from './pool-load.js';

export type { Assignment } from './executor-pool.js';
export type { OperationState, SubmitRequest } from './operation-book.js';
export type { PoolLabels, PoolLoad } from './pool-load.js';

export interface SchedulerOptions {
  /** Where the Action and Command of an operation left unfinished are read back from. */
  cas: BlobStore;
  /** Where successful results are written. */
  actionCache: ActionCache;
  log: Logger;
  clock?: Clock;
  /** Times an action is re-queued after its executor was lost before it fails. */
  maxAttempts?: number;
  /**
   * How long the capabilities of executors that went away still count when
   * deciding whether an action can execute: a worker that restarts or
   * reconnects must not make the builds that need it fail in the meantime.
   */
  departedGraceMs?: number;
}

export interface LocalSchedulerOptions extends SchedulerOptions {
  store: OperationStore;
}

export interface SchedulerCounters {
  completed: number;
  requeued: number;
  staleResults: number;
  /** Results kept out of the action cache because the worker that delivered them may not write it. */
  untrustedResults: number;
  /** Finished executions by outcome, cache hits of Execute included. */
  outcomes: Readonly<OutcomeCounts>;
}

/** One scheduler of a farm that shares its state, as `repr status` shows it. */
export interface SchedulerPeer {
  id: string;
  /** The address it told the others it listens on. */
  address: string;
  started: Date;
  lastHeartbeat: Date;
  workers: number;
  executors: number;
  busyExecutors: number;
  /** This process. */
  self: boolean;
}

/**
 * What the services see of scheduling. LocalScheduler keeps its queue in
 * memory and operations in SQLite, for one machine; SharedScheduler keeps
 * both in PostgreSQL, shared by any number of schedulers. Executors are
 * always this process's own (built-in ones and the workers connected here);
 * which operation they execute comes from the queue either keeps.
 */
export interface Scheduler {
  addExecutor(slot: ExecutorSlot): void;
  /**
   * Takes an executor out of rotation: it gets no new work. An action it is
   * executing goes on; if the executor cannot finish it, it rejects with
   * ExecutorLostError and the action is re-queued.
   */
  removeExecutor(slot: ExecutorSlot): void;
  /** Actions waiting for an executor (all schedulers' when shared, as of the last look). */
  readonly queueDepth: number;
  /** This process's executors executing an action or held for a `repr run`. */
  readonly busyExecutors: number;
  /**
   * Each pool's queue, this process's executors of it, and what arrived and
   * finished after `since` (ms since the epoch), for an autoscaler. An action
   * or executor counts toward one pool only (see pool-load.ts).
   */
  poolLoad(pools: readonly PoolLabels[], since: number): PoolLoad[];
  /** What each busy executor of this process is doing, by executor id. */
  assignments(): Map<string, Assignment>;
  /** Results each executor (by id) has delivered since the scheduler started. */
  completedByExecutor(): ReadonlyMap<string, number>;
  stats(): SchedulerCounters;
  /** Counts a result that came back for an execution the scheduler had already given up on. */
  noteStaleResult(): void;
  /** Why no executor can take these requirements (departed ones within their grace count), or undefined if one can. */
  unsatisfiable(reqs: readonly Requirement[]): string[] | undefined;
  /**
   * Holds one of this process's executors for a `repr run` until released;
   * `owner` (a principal, see Caller.owner) takes turns with other owners'
   * runs and actions.
   */
  acquire(requirements: readonly Requirement[], label: string, owner: string, signal: AbortSignal): Promise<HeldExecutor>;
  /**
   * Queues an action for execution, or joins the identical one in flight;
   * either way `owner` (a principal, see Caller.owner) becomes one of the
   * operation's owners.
   */
  submit(req: SubmitRequest, owner: string): Promise<OperationState>;
  /** Records an operation that finished without executing (an action-cache hit), owned by `owner`. */
  recordCompleted(instanceName: string, actionDigest: Digest, response: ExecuteResponse, owner: string): Promise<OperationState>;
  /** Who started or joined an operation; scoped as get() is (empty for an unknown name). */
  owners(name: string): Promise<readonly string[]>;
  /** Current state; undefined unless the name carries the operation's own instance. */
  get(name: string): Promise<OperationState | undefined>;
  /**
   * Calls `fn` with the current state and on every change until done (at
   * once or soon after: the state may have to be read first); returns an
   * unsubscribe function.
   */
  watch(name: string, fn: (s: OperationState) => void): () => void;
  /** One instance's operations whose names sort after `after`; only those `owner` owns, if given. */
  list(instanceName: string, after: string, limit: number, owner?: string): Promise<OperationState[]>;
  /** Cancels a queued or executing operation; false if it is unknown or already done. */
  cancel(name: string): Promise<boolean>;
  delete(name: string): Promise<boolean>;
  /** Takes up what an earlier run left unfinished (its own, or, when shared, that of schedulers that died). */
  recover(): Promise<number>;
  /** The schedulers sharing this one's state, this one included; empty when nothing is shared. */
  peers(): Promise<SchedulerPeer[]>;
  close(): Promise<void>;
}
