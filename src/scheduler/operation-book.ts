import type { Clock } from '../common/clock.js';
import { type Digest, digestFunctionFromValue, digestKey, digestString, makeDigest } from '../common/digest.js';
import { Code } from '../common/errors.js';
import type { Logger } from '../common/logger.js';
import type { Span } from '../common/tracing.js';
import type { ExecutionTask } from '../executor/execution-task.js';
import type { Requirement } from '../executor/platform.js';
import { Action, Command, ExecuteResponse, ExecutionStage_Value } from '../proto/build/bazel/remote/execution/v2/remote_execution.js';
import type { BlobStore } from '../storage/blob-store.js';
import { executionOutcome, noOutcomes, type OutcomeCounts } from './execution-outcome.js';
import { instanceOfOperation, newOperationName } from './operation-name.js';
import type { OperationRow, OperationStore } from './operation-store.js';

export interface OperationState {
  name: string;
  instanceName: string;
  actionDigest: Digest;
  stage: ExecutionStage_Value;
  /** Set once done. */
  response?: ExecuteResponse;
}

/** An action to queue: what an executor will be handed, and its place in line. */
export interface SubmitRequest extends Omit<ExecutionTask, 'operationName' | 'queuedAt'> {
  /** Lower is executed sooner (REAPI); 0 is the default. */
  priority: number;
}

/** An operation this process has queued: its state and watchers, and what executing it needs. */
export interface LiveOperation {
  state: OperationState;
  req: SubmitRequest;
  /** Identical actions share this key; see OperationBook.open. */
  key: string;
  /** Arrival order, for the queue. */
  seq: number;
  queuedAt: Date;
  watchers: Set<(s: OperationState) => void>;
  abort?: AbortController;
  cancelled?: boolean;
  /** Executions started, including ones lost with their executor. */
  attempts: number;
  /** Principals that started or joined it (Caller.owner). */
  owners: Set<string>;
  /** Open while it waits in line, when tracing is on. */
  queueSpan?: Span;
}

/**
 * Every operation by name: the live ones in memory with their watchers,
 * all of them in the OperationStore, so that a restarted server still
 * answers for finished operations and finishes what was queued or executing.
 * It also knows which operation an identical action joins: every caller of
 * the same action digest watches the same operation, except for do_not_cache
 * actions, which REAPI says must each execute on their own.
 */
export class OperationBook {
  private readonly byName = new Map<string, LiveOperation>();
  /** Unfinished operations others may join, by key. */
  private readonly joinable = new Map<string, LiveOperation>();
  private seq = 0;

  constructor(
    private readonly store: OperationStore,
    private readonly clock: Clock,
    private readonly log: Logger,
  ) {}

  /** Finished executions by outcome since the server started (a cache hit of Execute counts as cached). */
  readonly outcomes: OutcomeCounts = noOutcomes();

  /**
   * The operation a request joins if an identical one is in flight (fresh:
   * false), or a new, queued one. Whoever joins owns it too: they asked for
   * the same result and wait on it.
   */
  open(req: SubmitRequest, owner: string): { op: LiveOperation; fresh: boolean } {
    const key = mergeKey(req.instanceName, req.actionDigest);
    const existing = req.action.doNotCache ? undefined : this.joinable.get(key);
    if (existing) {
      this.log.debug({ op: existing.state.name, action: digestString(req.actionDigest) }, 'joined in-flight execution');
      if (!existing.owners.has(owner)) {
        existing.owners.add(owner);
        this.store.addOwner(existing.state.name, owner);
      }
      return { op: existing, fresh: false };
    }
    const name = newOperationName(req.instanceName);
    const now = this.clock.now();
    const op = this.track(name, req, new Date(now), [owner]);
    this.store.insert(
      {
        name,
        instanceName: req.instanceName,
        digestFunction: req.fn.value,
        actionHash: req.actionDigest.hash,
        actionSize: req.actionDigest.sizeBytes,
        stage: ExecutionStage_Value.QUEUED,
        priority: req.priority,
        requirements: JSON.stringify(req.requirements),
        response: null,
        createdMs: now,
        updatedMs: now,
      },
      owner,
    );
    return { op, fresh: true };
  }

  /** Records an operation that finished without executing (an action-cache hit). */
  recordCompleted(instanceName: string, actionDigest: Digest, response: ExecuteResponse, owner: string): OperationState {
    this.outcomes[executionOutcome(response)]++;
    const name = newOperationName(instanceName);
    const now = this.clock.now();
    this.store.insert(
      {
        name,
        instanceName,
        digestFunction: actionDigest.fn.value,
        actionHash: actionDigest.hash,
        actionSize: actionDigest.sizeBytes,
        stage: ExecutionStage_Value.COMPLETED,
        priority: 0,
        requirements: '[]',
        response: Buffer.from(ExecuteResponse.encode(response).finish()),
        createdMs: now,
        updatedMs: now,
      },
      owner,
    );
    return { name, instanceName, actionDigest, stage: ExecutionStage_Value.COMPLETED, response };
  }

  /** Who started or joined an operation, scoped as get() is. */
  owners(name: string): readonly string[] {
    if (!this.get(name)) return [];
    const live = this.byName.get(name);
    return live ? [...live.owners] : this.store.owners(name);
  }

  /**
   * Current state, from memory or (for operations of earlier runs) from the
   * store. Only under the name that carries the operation's own instance: that
   * is what keeps one instance's clients away from another's operations.
   */
  get(name: string): OperationState | undefined {
    const instance = instanceOfOperation(name);
    if (instance === undefined) return undefined;
    let s = this.byName.get(name)?.state;
    if (!s) {
      const row = this.store.get(name);
      s = row && stateFromRow(row);
    }
    return s?.instanceName === instance ? s : undefined;
  }

  /** The live operation under this name, scoped as get() is. */
  live(name: string): LiveOperation | undefined {
    return this.get(name) && this.byName.get(name);
  }

  /** Calls `fn` now with the current state and on every change until done; returns an unsubscribe function. */
  watch(name: string, fn: (s: OperationState) => void): () => void {
    const now = this.get(name);
    if (!now) return () => undefined;
    fn(now);
    const op = this.byName.get(name);
    if (!op || now.response) return () => undefined;
    op.watchers.add(fn);
    return () => op.watchers.delete(fn);
  }

  /** One instance's operations whose names sort after `after`; only those `owner` owns, if given. */
  list(instanceName: string, after: string, limit: number, owner?: string): OperationState[] {
    // Live operations from memory (fresher than their row), the rest from the rows already read.
    return this.store.list(instanceName, after, limit, owner).map((r) => this.byName.get(r.name)?.state ?? stateFromRow(r));
  }

  /** Forgets an operation; the caller has cancelled it if it was unfinished. */
  delete(name: string): boolean {
    this.byName.delete(name);
    return this.store.delete(name);
  }

  transition(op: LiveOperation, stage: ExecutionStage_Value): void {
    op.state = { ...op.state, stage };
    this.store.setStage(op.state.name, stage);
    for (const w of op.watchers) w(op.state);
  }

  finish(op: LiveOperation, response: ExecuteResponse): void {
    this.outcomes[executionOutcome(response)]++;
    op.state = { ...op.state, stage: ExecutionStage_Value.COMPLETED, response };
    this.store.complete(op.state.name, ExecutionStage_Value.COMPLETED, Buffer.from(ExecuteResponse.encode(response).finish()));
    if (this.joinable.get(op.key) === op) this.joinable.delete(op.key);
    for (const w of op.watchers) w(op.state);
    op.watchers.clear();
  }

  /**
   * Hands `requeue` what an earlier run of the server left unfinished, in
   * the order it arrived; one whose Action or Command cannot be read back
   * fails instead. Returns how many were re-queued.
   */
  async recover(cas: BlobStore, requeue: (op: LiveOperation) => void): Promise<number> {
    let n = 0;
    for (const row of this.store.unfinished()) {
      try {
        const fn = digestFunctionFromValue(row.digestFunction);
        const actionDigest = makeDigest(fn, row.actionHash, row.actionSize);
        const action = Action.decode(await cas.get(actionDigest));
        const command = Command.decode(await cas.get(makeDigest(fn, action.commandDigest!.hash, action.commandDigest!.sizeBytes)));
        const req: SubmitRequest = {
          instanceName: row.instanceName,
          fn,
          actionDigest,
          action,
          command,
          requirements: JSON.parse(row.requirements) as Requirement[],
          priority: row.priority,
        };
        const op = this.track(row.name, req, new Date(row.createdMs), this.store.owners(row.name));
        this.store.setStage(row.name, ExecutionStage_Value.QUEUED);
        requeue(op);
        n++;
      } catch (e) {
        const response = ExecuteResponse.fromPartial({
          status: { code: Code.FAILED_PRECONDITION, message: `could not resume after restart: ${(e as Error).message}` },
        });
        this.store.complete(row.name, ExecutionStage_Value.COMPLETED, Buffer.from(ExecuteResponse.encode(response).finish()));
      }
    }
    if (n > 0) this.log.info({ operations: n }, 're-queued unfinished operations');
    return n;
  }

  private track(name: string, req: SubmitRequest, queuedAt: Date, owners: readonly string[]): LiveOperation {
    const op: LiveOperation = {
      state: { name, instanceName: req.instanceName, actionDigest: req.actionDigest, stage: ExecutionStage_Value.QUEUED },
      req,
      key: mergeKey(req.instanceName, req.actionDigest),
      seq: this.seq++,
      queuedAt,
      watchers: new Set(),
      attempts: 0,
      owners: new Set(owners),
    };
    this.byName.set(name, op);
    // Not joinable either: whoever sends the same do_not_cache action gets its own execution.
    if (!req.action.doNotCache) this.joinable.set(op.key, op);
    return op;
  }
}

/** Identical actions of one instance share this key; see OperationBook.open. */
export function mergeKey(instanceName: string, actionDigest: Digest): string {
  return `${instanceName}\0${digestKey(actionDigest)}`;
}

function stateFromRow(row: OperationRow): OperationState {
  return {
    name: row.name,
    instanceName: row.instanceName,
    actionDigest: makeDigest(digestFunctionFromValue(row.digestFunction), row.actionHash, row.actionSize),
    stage: row.stage,
    ...(row.response ? { response: ExecuteResponse.decode(row.response) } : {}),
  };
}
