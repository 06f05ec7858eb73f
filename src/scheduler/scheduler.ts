import { type Digest, digestFunctionFromValue, digestKey, digestString, makeDigest } from '../common/digest.js';
import { Code, codeOf, ReprError, toStatus } from '../common/errors.js';
import type { Logger } from '../common/logger.js';
import type { BlobStore } from '../storage/blob-store.js';
import { acKey } from '../storage/action-cache.js';
import { Action, ActionResult, Command, ExecuteResponse, ExecutionStage_Value } from '../proto/build/bazel/remote/execution/v2/remote_execution.js';
import type { RunFinished, RunRequest } from '../proto/repr/run/v1/run.js';
import { instanceOfOperation, newOperationName } from './operation-name.js';
import type { OperationRow, OperationStore } from './operation-store.js';
import { type ExecutorCapabilities, type Requirement, unmet } from '../executor/platform.js';
import type { ExecutionTask } from '../executor/execution-task.js';
import type { RunHost } from '../executor/run-host.js';
import { ExecutorLostError, ExecutorSlot, HeldExecutor } from '../executor/executor-slot.js';



interface RunWaiter {
  requirements: readonly Requirement[];
  label: string;
  resolve(h: HeldExecutor): void;
  reject(e: Error): void;
}


export interface SchedulerOptions {
  /** Times an action is re-queued after its executor was lost before it fails. */
  maxAttempts?: number;
  /**
   * How long the capabilities of executors that went away still count when
   * deciding whether an action can run: a worker that restarts or reconnects
   * must not make the builds that need it fail in the meantime.
   */
  departedGraceMs?: number;
}

export interface RunningAction {
  /** An operation name, or `runs/<id>` for a `repr run`. */
  operationName: string;
  /** Unset for a `repr run`. */
  actionDigest?: Digest;
  started: Date;
}

export interface SchedulerCounters {
  completed: number;
  requeued: number;
  staleResults: number;
}

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
  /** Lower runs sooner (REAPI); 0 is the default. */
  priority: number;
}

interface Entry {
  state: OperationState;
  req: SubmitRequest;
  key: string;
  seq: number;
  queuedAt: Date;
  watchers: Set<(s: OperationState) => void>;
  abort?: AbortController;
  cancelled?: boolean;
  /** Executions started, including ones lost with their executor. */
  attempts: number;
}

/**
 * Queues operations by priority, hands each to an idle executor whose
 * capabilities satisfy the action's platform, runs identical in-flight actions
 * once (every caller of the same action digest watches the same operation;
 * REAPI forbids this for do_not_cache actions, which always run on their own),
 * writes successful results to the action cache and records every operation
 * in the store, so that a restart finishes what was queued or running.
 */
export class Scheduler {
  private readonly byName = new Map<string, Entry>();
  private readonly inflight = new Map<string, Entry>();
  private readonly queue: Entry[] = [];
  /** `repr run`s waiting for an executor; served before queued actions (a person is waiting on them). */
  private readonly runWaiters: RunWaiter[] = [];
  private readonly executors: ExecutorSlot[] = [];
  private readonly idle: ExecutorSlot[] = [];
  private readonly running = new Map<ExecutorSlot, RunningAction>();
  /** Capabilities of executors removed lately, and until when they still count. */
  private departed: { caps: ExecutorCapabilities; runs: boolean; until: number }[] = [];
  private readonly counters: SchedulerCounters = { completed: 0, requeued: 0, staleResults: 0 };
  private readonly completedBy = new Map<string, number>();
  private readonly maxAttempts: number;
  private readonly departedGraceMs: number;
  private readonly sweeper: NodeJS.Timeout;
  private seq = 0;

  constructor(
    private readonly store: OperationStore,
    private readonly cas: BlobStore,
    private readonly ac: BlobStore,
    private readonly log: Logger,
    opts: SchedulerOptions = {},
  ) {
    this.maxAttempts = opts.maxAttempts ?? 5;
    this.departedGraceMs = opts.departedGraceMs ?? 60_000;
    this.sweeper = setInterval(() => this.failUnrunnable(), 1000);
    this.sweeper.unref();
  }

  addExecutor(slot: ExecutorSlot): void {
    this.executors.push(slot);
    this.idle.push(slot);
    this.dispatch();
  }

  /**
   * Takes an executor out of rotation: it gets no new work. An action it is
   * running goes on; if the executor cannot finish it, it rejects with
   * ExecutorLostError and the action is re-queued.
   */
  removeExecutor(slot: ExecutorSlot): void {
    const i = this.executors.indexOf(slot);
    if (i < 0) return;
    this.executors.splice(i, 1);
    const j = this.idle.indexOf(slot);
    if (j >= 0) this.idle.splice(j, 1);
    this.departed.push({ caps: slot.caps, runs: slot.run !== undefined, until: Date.now() + this.departedGraceMs });
  }

  get queueDepth(): number {
    return this.queue.length;
  }

  get executing(): number {
    return this.running.size;
  }

  /** What each busy executor is running, by executor id. */
  runningActions(): Map<string, RunningAction> {
    return new Map([...this.running].map(([slot, r]) => [slot.id, r]));
  }

  /** Results each executor (by id) has delivered since the scheduler started. */
  completedByExecutor(): ReadonlyMap<string, number> {
    return this.completedBy;
  }

  stats(): SchedulerCounters {
    return { ...this.counters };
  }

  /** Counts a result that came back for an execution the scheduler had already given up on. */
  noteStaleResult(): void {
    this.counters.staleResults++;
  }

  /**
   * Why no executor can run these requirements, or undefined if one can.
   * Reported for the executor that misses the fewest. Executors that left in
   * the last `departedGraceMs` count, so the action waits for them to return.
   */
  unsatisfiable(reqs: readonly Requirement[], all = this.capabilities()): string[] | undefined {
    if (all.length === 0) return ['no executors are connected'];
    let best: string[] | undefined;
    for (const caps of all) {
      const why = unmet(reqs, caps);
      if (why.length === 0) return undefined;
      if (!best || why.length < best.length) best = why;
    }
    return best;
  }

  /** What present executors offer, and what departed ones still within their grace offered. */
  private capabilities(forRuns = false): ExecutorCapabilities[] {
    const now = Date.now();
    this.departed = this.departed.filter((d) => d.until > now);
    const present = this.executors.filter((e) => !forRuns || e.run).map((e) => e.caps);
    return [...present, ...this.departed.filter((d) => !forRuns || d.runs).map((d) => d.caps)];
  }

  /**
   * Waits for an idle executor that can carry out `repr run`s and satisfies
   * the requirements, and holds it until released. Fails at once with
   * FAILED_PRECONDITION when no executor could ever take it.
   */
  acquire(requirements: readonly Requirement[], label: string, signal: AbortSignal): Promise<HeldExecutor> {
    const why = this.unsatisfiable(requirements, this.capabilities(true));
    if (why) return Promise.reject(new ReprError(Code.FAILED_PRECONDITION, `no executor can run this command; unmet: ${why.join(', ')}`));
    return new Promise<HeldExecutor>((resolve, reject) => {
      const w: RunWaiter = { requirements, label, resolve, reject };
      const onAbort = () => {
        const i = this.runWaiters.indexOf(w);
        if (i >= 0) this.runWaiters.splice(i, 1);
        reject(new ReprError(Code.CANCELLED, 'cancelled while waiting for an executor'));
      };
      if (signal.aborted) return onAbort();
      signal.addEventListener('abort', onAbort, { once: true });
      w.resolve = (h) => {
        signal.removeEventListener('abort', onAbort);
        resolve(h);
      };
      this.runWaiters.push(w);
      this.dispatch();
    });
  }

  /** Fails queued actions that no executor (present, or gone but within its grace) can run. */
  private failUnrunnable(): void {
    if (this.runWaiters.length > 0) {
      const runCaps = this.capabilities(true);
      for (const w of [...this.runWaiters]) {
        const why = this.unsatisfiable(w.requirements, runCaps);
        if (!why) continue;
        this.runWaiters.splice(this.runWaiters.indexOf(w), 1);
        w.reject(new ReprError(Code.FAILED_PRECONDITION, `no executor can run this command any more; unmet: ${why.join(', ')}`));
      }
    }
    if (this.queue.length === 0) return;
    const caps = this.capabilities();
    for (const e of [...this.queue]) {
      const why = this.unsatisfiable(e.req.requirements, caps);
      if (!why) continue;
      this.queue.splice(this.queue.indexOf(e), 1);
      this.finish(
        e,
        ExecuteResponse.fromPartial({
          status: { code: Code.FAILED_PRECONDITION, message: `no executor can run this action any more; unmet platform properties: ${why.join(', ')}` },
        }),
      );
    }
  }

  close(): void {
    clearInterval(this.sweeper);
  }

  submit(req: SubmitRequest): OperationState {
    const key = `${req.instanceName}\0${digestKey(req.actionDigest)}`;
    const existing = req.action.doNotCache ? undefined : this.inflight.get(key);
    if (existing) {
      this.log.debug({ op: existing.state.name, action: digestString(req.actionDigest) }, 'joined in-flight execution');
      return existing.state;
    }
    const name = newOperationName(req.instanceName);
    const entry = this.newEntry(name, req, key, new Date());
    this.store.insert({
      name,
      instanceName: req.instanceName,
      digestFunction: req.fn.value,
      actionHash: req.actionDigest.hash,
      actionSize: req.actionDigest.sizeBytes,
      stage: ExecutionStage_Value.QUEUED,
      priority: req.priority,
      requirements: JSON.stringify(req.requirements),
      response: null,
      createdMs: Date.now(),
      updatedMs: Date.now(),
    });
    this.enqueue(entry);
    return entry.state;
  }

  /** Records an operation that finished without executing (an action-cache hit). */
  recordCompleted(instanceName: string, actionDigest: Digest, response: ExecuteResponse): OperationState {
    const name = newOperationName(instanceName);
    const now = Date.now();
    this.store.insert({
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
    });
    return { name, instanceName, actionDigest, stage: ExecutionStage_Value.COMPLETED, response };
  }

  private newEntry(name: string, req: SubmitRequest, key: string, queuedAt: Date): Entry {
    const entry: Entry = {
      state: { name, instanceName: req.instanceName, actionDigest: req.actionDigest, stage: ExecutionStage_Value.QUEUED },
      req,
      key,
      seq: this.seq++,
      queuedAt,
      watchers: new Set(),
      attempts: 0,
    };
    this.byName.set(name, entry);
    // Not joinable either: whoever sends the same do_not_cache action gets its own run.
    if (!req.action.doNotCache) this.inflight.set(key, entry);
    return entry;
  }

  private enqueue(entry: Entry): void {
    // Sorted by (priority, arrival); insertion keeps it so without re-sorting.
    let i = this.queue.length;
    while (i > 0 && (this.queue[i - 1]!.req.priority > entry.req.priority || (this.queue[i - 1]!.req.priority === entry.req.priority && this.queue[i - 1]!.seq > entry.seq))) i--;
    this.queue.splice(i, 0, entry);
    this.dispatch();
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

  /** Calls `fn` now with the current state and on every change until done; returns an unsubscribe function. */
  watch(name: string, fn: (s: OperationState) => void): () => void {
    const now = this.get(name);
    if (!now) return () => undefined;
    fn(now);
    const e = this.byName.get(name);
    if (!e || now.response) return () => undefined;
    e.watchers.add(fn);
    return () => e.watchers.delete(fn);
  }

  /** One instance's operations whose names sort after `after`. */
  list(instanceName: string, after: string, limit: number): OperationState[] {
    // Live operations from memory (fresher than their row), the rest from the rows already read.
    return this.store.list(instanceName, after, limit).map((r) => this.byName.get(r.name)?.state ?? stateFromRow(r));
  }

  /** Cancels a queued or running operation; false if it is unknown or already done. */
  cancel(name: string): boolean {
    const e = this.get(name) && this.byName.get(name);
    if (!e || e.state.response) return false;
    e.cancelled = true;
    const i = this.queue.indexOf(e);
    if (i >= 0) {
      this.queue.splice(i, 1);
      this.finish(e, cancelledResponse());
    } else {
      e.abort?.abort();
    }
    return true;
  }

  delete(name: string): boolean {
    if (!this.get(name)) return false;
    const e = this.byName.get(name);
    if (e && !e.state.response) this.cancel(name);
    this.byName.delete(name);
    return this.store.delete(name);
  }

  /** Re-queues what an earlier run of the server left unfinished. */
  async recover(): Promise<number> {
    let n = 0;
    for (const row of this.store.unfinished()) {
      try {
        const fn = digestFunctionFromValue(row.digestFunction);
        const actionDigest = makeDigest(fn, row.actionHash, row.actionSize);
        const action = Action.decode(await this.cas.get(actionDigest));
        const command = Command.decode(await this.cas.get(makeDigest(fn, action.commandDigest!.hash, action.commandDigest!.sizeBytes)));
        const req: SubmitRequest = { instanceName: row.instanceName, fn, actionDigest, action, command, requirements: JSON.parse(row.requirements) as Requirement[], priority: row.priority };
        const entry = this.newEntry(row.name, req, `${row.instanceName}\0${digestKey(actionDigest)}`, new Date(row.createdMs));
        this.store.setStage(row.name, ExecutionStage_Value.QUEUED);
        this.enqueue(entry);
        n++;
      } catch (e) {
        const response = ExecuteResponse.fromPartial({ status: { code: Code.FAILED_PRECONDITION, message: `could not resume after restart: ${(e as Error).message}` } });
        this.store.complete(row.name, ExecutionStage_Value.COMPLETED, Buffer.from(ExecuteResponse.encode(response).finish()));
      }
    }
    if (n > 0) this.log.info({ operations: n }, 're-queued unfinished operations');
    return n;
  }

  private dispatch(): void {
    for (let wi = 0; wi < this.runWaiters.length && this.idle.length > 0; ) {
      const w = this.runWaiters[wi]!;
      const si = this.idle.findIndex((s) => s.run !== undefined && unmet(w.requirements, s.caps).length === 0);
      if (si < 0) {
        wi++;
        continue;
      }
      this.runWaiters.splice(wi, 1);
      const [slot] = this.idle.splice(si, 1);
      this.hold(slot!, w);
    }
    for (let i = 0; i < this.idle.length && this.queue.length > 0; ) {
      const slot = this.idle[i]!;
      const qi = this.queue.findIndex((e) => unmet(e.req.requirements, slot.caps).length === 0);
      if (qi < 0) {
        i++;
        continue;
      }
      const [entry] = this.queue.splice(qi, 1);
      this.idle.splice(i, 1);
      void this.run(slot, entry!);
    }
  }

  private hold(slot: ExecutorSlot, w: RunWaiter): void {
    this.running.set(slot, { operationName: w.label, started: new Date() });
    let released = false;
    w.resolve({
      slot: slot as HeldExecutor['slot'],
      release: () => {
        if (released) return;
        released = true;
        this.running.delete(slot);
        this.completedBy.set(slot.id, (this.completedBy.get(slot.id) ?? 0) + 1);
        if (this.executors.includes(slot)) this.idle.push(slot);
        this.dispatch();
      },
    });
  }

  private async run(slot: ExecutorSlot, entry: Entry): Promise<void> {
    entry.abort = new AbortController();
    entry.attempts++;
    this.running.set(slot, { operationName: entry.state.name, actionDigest: entry.req.actionDigest, started: new Date() });
    this.transition(entry, ExecutionStage_Value.EXECUTING);
    let response: ExecuteResponse | undefined;
    try {
      const { req } = entry;
      response = await slot.execute({ ...req, operationName: entry.state.name, queuedAt: entry.queuedAt }, entry.abort.signal);
      if (entry.cancelled) response = { ...cancelledResponse(), result: response.result };
    } catch (e) {
      if (e instanceof ExecutorLostError && !entry.cancelled && entry.attempts < this.maxAttempts) {
        this.log.warn({ op: entry.state.name, executor: slot.id, attempt: entry.attempts, reason: e.message }, 'executor lost; re-queueing the action');
        this.counters.requeued++;
      } else if (entry.cancelled) {
        response = cancelledResponse();
      } else {
        if (!(e instanceof ExecutorLostError) && codeOf(e) !== Code.FAILED_PRECONDITION) this.log.error({ err: e, op: entry.state.name, executor: slot.id }, 'executor failed');
        const status = e instanceof ExecutorLostError ? toStatus(e, `gave up after ${entry.attempts} executors were lost running it; last`) : toStatus(e, `executor ${slot.id}`);
        response = ExecuteResponse.fromPartial({ status });
      }
    } finally {
      this.running.delete(slot);
      // A removed executor (lost or draining) gets no more work.
      if (this.executors.includes(slot)) this.idle.push(slot);
    }
    if (!response) {
      // Back in line at its original place: it has waited already.
      entry.abort = undefined;
      this.transition(entry, ExecutionStage_Value.QUEUED);
      this.enqueue(entry);
      this.dispatch();
      return;
    }
    await this.cacheResult(entry, response).catch((e: unknown) => this.log.warn({ err: e, op: entry.state.name }, 'could not write the action cache'));
    this.counters.completed++;
    this.completedBy.set(slot.id, (this.completedBy.get(slot.id) ?? 0) + 1);
    this.finish(entry, response);
    this.dispatch();
  }

  private async cacheResult(entry: Entry, response: ExecuteResponse): Promise<void> {
    if (response.status?.code || !response.result || response.result.exitCode !== 0 || entry.req.action.doNotCache) return;
    await this.ac.put(acKey(entry.req.instanceName, entry.req.actionDigest), Buffer.from(ActionResult.encode(response.result).finish()));
  }

  private transition(entry: Entry, stage: ExecutionStage_Value): void {
    entry.state = { ...entry.state, stage };
    this.store.setStage(entry.state.name, stage);
    for (const w of entry.watchers) w(entry.state);
  }

  private finish(entry: Entry, response: ExecuteResponse): void {
    entry.state = { ...entry.state, stage: ExecutionStage_Value.COMPLETED, response };
    this.store.complete(entry.state.name, ExecutionStage_Value.COMPLETED, Buffer.from(ExecuteResponse.encode(response).finish()));
    if (this.inflight.get(entry.key) === entry) this.inflight.delete(entry.key);
    for (const w of entry.watchers) w(entry.state);
    entry.watchers.clear();
  }
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

function cancelledResponse(): ExecuteResponse {
  return ExecuteResponse.fromPartial({ status: { code: Code.CANCELLED, message: 'operation cancelled' } });
}

