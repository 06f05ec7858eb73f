import { randomUUID } from 'node:crypto';
import type pg from 'pg';
import { Backoff } from '../common/backoff.js';
import { type Clock, systemClock } from '../common/clock.js';
import { type Digest, digestFunctionFromValue, digestString, makeDigest } from '../common/digest.js';
import { Code, codeOf, toStatus } from '../common/errors.js';
import { childContext, endSpan, extractTraceContext, injectTraceContext, recordGetter, startSpan } from '../common/tracing.js';
import { ExecutorLostError, type ExecutorSlot, type HeldExecutor } from '../executor/executor-slot.js';
import { type ExecutorCapabilities, type Requirement, unmet } from '../executor/platform.js';
import { Action, Command, ExecuteResponse, ExecutionStage_Value } from '../proto/build/bazel/remote/execution/v2/remote_execution.js';
import { executionOutcome, noOutcomes, type OutcomeCounts } from './execution-outcome.js';
import { type Assignment, ExecutorPool, unsatisfiable } from './executor-pool.js';
import { mergeKey, type OperationState, type SubmitRequest } from './operation-book.js';
import { instanceOfOperation, newOperationName } from './operation-name.js';
import { CHANNELS, type Claimed, type OperationRecord, PgState } from './pg-state.js';
import { redactPostgresUrl } from '../storage/postgres-url.js';
import { ResultCache } from './result-cache.js';
import { RunLine } from './run-line.js';
import type { Scheduler, SchedulerCounters, SchedulerOptions, SchedulerPeer } from './scheduler.js';
import { LoadLog, type PoolLabels, type PoolLoad } from './pool-load.js';

export interface SharedSchedulerOptions extends SchedulerOptions {
  /** postgres://… of the database the schedulers share. */
  url: string;
  /** What the other schedulers and `repr status` show as this one's address (known once it listens). */
  address: () => string;
  /**
   * How long this scheduler's heartbeat row stays valid: a scheduler silent
   * for longer is taken for dead and its executions go back in line. It
   * beats five times per period, so one slow beat does not kill it.
   */
  expiryMs?: number;
  /** Worker groups connected here, for the others' `repr status`. */
  countWorkers?: () => number;
  /** Waiting executions looked at per claim; rows beyond it wait for the next one. */
  claimWindow?: number;
}

/** An execution this process is carrying out under a lease. */
interface Running {
  claimed: Claimed;
  abort: AbortController;
}

/**
 * A scheduler that shares its queue, operations and merge index with any
 * number of others through PostgreSQL (PgState). Each one hands its own
 * executors work from the shared queue, records the outcomes under leases
 * (so each operation is finished once), follows operations any scheduler
 * runs through NOTIFY, and takes back the leases of schedulers whose
 * heartbeat has expired.
 */
export class SharedScheduler implements Scheduler {
  readonly id = `${randomUUID()}`;
  private readonly clock: Clock;
  private readonly pool: ExecutorPool;
  private readonly runs: RunLine;
  private readonly results: ResultCache;
  private readonly running = new Map<string, Running>();
  private readonly watchers = new Map<string, { last?: OperationState; fns: Set<(s: OperationState) => void> }>();
  private readonly counters = { completed: 0, requeued: 0, staleResults: 0 };
  private readonly outcomes: OutcomeCounts = noOutcomes();
  /** What every scheduler's executors offer, by capabilities, and when it was last seen. */
  private readonly farmCaps = new Map<string, { caps: ExecutorCapabilities; seen: number }>();
  private readonly expiryMs: number;
  private readonly departedGraceMs: number;
  private readonly maxAttempts: number;
  private waiting: { requirements: readonly Requirement[]; count: number }[] = [];
  private readonly load: LoadLog;
  private listener: pg.Client | undefined;
  private claiming = false;
  private claimAgain = false;
  /**
   * Whether waiting runs go before the queue for the next executor that
   * comes free. The queue's owners are unknown until a claim reads them, so
   * runs and claims alternate while both have work: neither a burst of runs
   * nor a long queue holds the other back by more than one executor's turn.
   */
  private runsFirst = true;
  /** Work was queued since the last claim that found none: a notification, a beat, or a fruitful claim said so. */
  private queueMayHaveWork = false;
  private closed = false;
  private cancelBeat: (() => void) | undefined;
  private readonly listenBackoff = new Backoff({ initialMs: 250, maxMs: 5000 });

  private constructor(
    private readonly state: PgState,
    private readonly o: SharedSchedulerOptions,
  ) {
    this.clock = o.clock ?? systemClock;
    this.expiryMs = o.expiryMs ?? 10_000;
    this.departedGraceMs = o.departedGraceMs ?? 60_000;
    this.maxAttempts = o.maxAttempts ?? 5;
    this.pool = new ExecutorPool(this.clock, this.departedGraceMs);
    this.runs = new RunLine(
      this.pool,
      () => this.dispatch(),
      () => undefined,
    );
    this.results = new ResultCache(o.actionCache, o.log);
    this.load = new LoadLog(this.clock);
  }

  /** Connects to the database (migrating its schema) and joins the farm. */
  static async open(o: SharedSchedulerOptions): Promise<SharedScheduler> {
    const state = await PgState.open(o.url, o.log);
    const s = new SharedScheduler(state, o);
    try {
      await s.beat();
      await s.listen();
    } catch (e) {
      await state.close();
      throw e;
    }
    o.log.info({ scheduler: s.id, database: redactPostgresUrl(o.url), expiryMs: s.expiryMs }, 'joined the schedulers sharing the database');
    return s;
  }

  addExecutor(slot: ExecutorSlot): void {
    this.pool.add(slot);
    this.dispatch();
  }

  removeExecutor(slot: ExecutorSlot): void {
    this.pool.remove(slot);
  }

  get queueDepth(): number {
    return this.waiting.reduce((n, w) => n + w.count, 0);
  }

  /**
   * The shared queue as of the last heartbeat; this process's executors; and
   * arrivals of the submissions this scheduler took (those of its peers
   * reach their own autoscaler, if any).
   */
  poolLoad(pools: readonly PoolLabels[], since: number): PoolLoad[] {
    return this.load.poolLoad(pools, since, this.waiting, this.pool.census());
  }

  get busyExecutors(): number {
    return this.pool.busyCount;
  }

  assignments(): Map<string, Assignment> {
    return this.pool.assignments();
  }

  completedByExecutor(): ReadonlyMap<string, number> {
    return this.pool.completedByExecutor();
  }

  stats(): SchedulerCounters {
    return { ...this.counters, untrustedResults: this.results.untrusted, outcomes: this.outcomes };
  }

  noteStaleResult(): void {
    this.counters.staleResults++;
  }

  /** Any scheduler's executors count, and those seen within the grace period: a worker moving between schedulers is not gone. */
  unsatisfiable(reqs: readonly Requirement[]): string[] | undefined {
    const now = this.clock.now();
    const caps = this.pool.capabilities();
    for (const [k, v] of this.farmCaps) {
      if (now - v.seen > this.departedGraceMs) this.farmCaps.delete(k);
      else caps.push(v.caps);
    }
    return unsatisfiable(reqs, caps);
  }

  acquire(requirements: readonly Requirement[], label: string, owner: string, signal: AbortSignal): Promise<HeldExecutor> {
    return this.runs.acquire(requirements, label, owner, signal);
  }

  async submit(req: SubmitRequest, owner: string): Promise<OperationState> {
    const name = newOperationName(req.instanceName);
    const trace = injectTraceContext(req.trace);
    const r = await this.state.submit(
      {
        name,
        instanceName: req.instanceName,
        digestFunction: req.fn.value,
        actionHash: req.actionDigest.hash,
        actionSize: req.actionDigest.sizeBytes,
        // PostgreSQL text holds no NUL, which the in-memory key separates its fields with.
        ...(req.action.doNotCache ? {} : { mergeKey: JSON.stringify(mergeKey(req.instanceName, req.actionDigest).split('\0')) }),
        priority: req.priority,
        requirements: req.requirements,
        action: Action.encode(req.action).finish(),
        command: Command.encode(req.command).finish(),
        ...(Object.keys(trace).length > 0 ? { trace } : {}),
      },
      owner,
    );
    if (r.fresh) this.load.arrived(req.requirements);
    else this.o.log.debug({ op: r.name, action: digestString(req.actionDigest) }, 'joined in-flight execution');
    return { name: r.name, instanceName: req.instanceName, actionDigest: req.actionDigest, stage: r.stage };
  }

  async recordCompleted(instanceName: string, actionDigest: Digest, response: ExecuteResponse, owner: string): Promise<OperationState> {
    this.outcomes[executionOutcome(response)]++;
    const name = newOperationName(instanceName);
    await this.state.insertCompleted(
      {
        name,
        instanceName,
        digestFunction: actionDigest.fn.value,
        actionHash: actionDigest.hash,
        actionSize: actionDigest.sizeBytes,
        response: Buffer.from(ExecuteResponse.encode(response).finish()),
      },
      owner,
    );
    return { name, instanceName, actionDigest, stage: ExecutionStage_Value.COMPLETED, response };
  }

  async owners(name: string): Promise<readonly string[]> {
    if (!(await this.get(name))) return [];
    return this.state.owners(name);
  }

  async get(name: string): Promise<OperationState | undefined> {
    const instance = instanceOfOperation(name);
    if (instance === undefined) return undefined;
    const rec = await this.state.get(name);
    return rec && rec.instanceName === instance ? stateOf(rec) : undefined;
  }

  watch(name: string, fn: (s: OperationState) => void): () => void {
    let w = this.watchers.get(name);
    if (!w) this.watchers.set(name, (w = { fns: new Set() }));
    const entry = w;
    entry.fns.add(fn);
    // Subscribed first, read second: a change between the two is heard, not missed.
    void this.refresh([name]);
    return () => {
      entry.fns.delete(fn);
      if (entry.fns.size === 0 && this.watchers.get(name) === entry) this.watchers.delete(name);
    };
  }

  async list(instanceName: string, after: string, limit: number, owner?: string): Promise<OperationState[]> {
    return (await this.state.list(instanceName, after, limit, owner)).map(stateOf);
  }

  async cancel(name: string): Promise<boolean> {
    const s = await this.get(name);
    if (!s || s.response) return false;
    const where = await this.state.requestCancel(name);
    // Waiting: nobody else will finish it. Executing: the scheduler running it aborts it and records the outcome.
    if (where === 'waiting') await this.state.finish(name, undefined, encode(cancelledResponse()));
    else if (where === 'executing') this.abortLocal(name);
    return where !== undefined;
  }

  async delete(name: string): Promise<boolean> {
    if (!(await this.get(name))) return false;
    await this.cancel(name);
    return this.state.delete(name);
  }

  /** Takes back what expired schedulers held; run at start and with every heartbeat. */
  async recover(): Promise<number> {
    const { dead, requeued } = await this.state.recoverDead();
    if (dead.length > 0 || requeued > 0) this.o.log.warn({ schedulers: dead, requeued }, 'took back the executions of schedulers that stopped beating');
    this.dispatch();
    return requeued;
  }

  async peers(): Promise<SchedulerPeer[]> {
    return (await this.state.peers()).map((p) => ({
      id: p.id,
      address: p.address,
      started: p.startedAt,
      lastHeartbeat: p.heartbeatAt,
      workers: p.workers,
      executors: p.executors,
      busyExecutors: p.busy,
      self: p.id === this.id,
    }));
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.cancelBeat?.();
    const l = this.listener;
    this.listener = undefined;
    await l?.end().catch(() => undefined);
    try {
      // What this scheduler still held goes back in line now rather than when its row would expire.
      await this.state.leave(this.id);
    } catch (e) {
      this.o.log.warn({ err: e }, 'could not leave the shared state cleanly; the others take over when this scheduler expires');
    }
    await this.state.close();
  }

  // ---- heartbeat ----

  private async beat(): Promise<void> {
    const caps = this.pool.capabilities();
    const known = await this.state.heartbeat(this.id, this.o.address(), this.expiryMs, {
      workers: this.o.countWorkers?.() ?? 0,
      executors: this.pool.idle.length + this.pool.busyCount,
      busy: this.pool.busyCount,
      capabilities: dedupe(caps),
    });
    if (!known && this.cancelBeat) {
      this.o.log.error(
        { scheduler: this.id },
        'this scheduler was taken for dead (heartbeat late); its executions were put back in line and their results here will be dropped',
      );
    }
    const now = this.clock.now();
    for (const p of await this.state.peers()) for (const c of p.capabilities) this.farmCaps.set(JSON.stringify(c), { caps: c, seen: now });
    this.waiting = await this.state.waiting();
    this.queueMayHaveWork = this.queueDepth > 0;
    // Runs wait for this process's executors only; one that no executor here can take any more fails.
    this.runs.failUnsatisfiable();
    this.scheduleBeat();
  }

  private scheduleBeat(): void {
    if (this.closed) return;
    this.cancelBeat = this.clock.setTimeout(
      () => {
        void this.beat()
          .then(() => this.recover())
          .catch((e) => {
            this.o.log.warn({ err: e }, 'heartbeat failed; retrying');
            this.scheduleBeat();
          });
      },
      Math.max(50, Math.floor(this.expiryMs / 5)),
    );
  }

  // ---- notifications ----

  private async listen(): Promise<void> {
    const c = await this.state.listener();
    this.listener = c;
    this.listenBackoff.reset();
    c.on('notification', (n) => this.onNotification(n.channel, n.payload ?? ''));
    const lost = (e?: Error) => {
      if (this.listener !== c || this.closed) return;
      this.listener = undefined;
      c.end().catch(() => undefined);
      this.o.log.warn({ err: e }, 'lost the database notification connection; reconnecting');
      void this.relisten();
    };
    c.on('error', lost);
    c.on('end', () => lost());
  }

  private async relisten(): Promise<void> {
    while (!this.closed && !this.listener) {
      try {
        await this.listen();
        // What changed while deaf is read now.
        await this.refresh([...this.watchers.keys()]);
        this.dispatch();
      } catch (e) {
        const ms = this.listenBackoff.next();
        this.o.log.warn({ err: e, retryMs: ms }, 'cannot listen for database notifications');
        await new Promise<void>((r) => this.clock.setTimeout(r, ms));
      }
    }
  }

  private onNotification(channel: string, payload: string): void {
    if (channel === CHANNELS.queue) {
      this.queueMayHaveWork = true;
      this.dispatch();
    } else if (channel === CHANNELS.cancel) {
      this.abortLocal(payload);
    } else if (channel === CHANNELS.op) {
      const colon = payload.indexOf(':');
      const stage = Number(payload.slice(0, colon));
      const name = payload.slice(colon + 1);
      const w = this.watchers.get(name);
      if (!w) return;
      // The stage is all that changes until the end; the response is read once done.
      if (stage !== ExecutionStage_Value.COMPLETED && w.last && !w.last.response) this.deliver(name, { ...w.last, stage });
      else void this.refresh([name]);
    }
  }

  private async refresh(names: string[]): Promise<void> {
    if (names.length === 0) return;
    try {
      for (const rec of await this.state.getMany(names)) this.deliver(rec.name, stateOf(rec));
    } catch (e) {
      this.o.log.warn({ err: e, operations: names.length }, 'could not read operations being watched');
    }
  }

  private deliver(name: string, s: OperationState): void {
    const w = this.watchers.get(name);
    if (!w || w.last?.response) return;
    w.last = s;
    for (const fn of [...w.fns]) fn(s);
    if (s.response) this.watchers.delete(name);
  }

  // ---- dispatch ----

  /** Gives idle executors to waiting runs, then claims queued executions for the rest, or the other way round by turns. */
  private dispatch(): void {
    if (this.runsFirst || !this.queueMayHaveWork) this.serveRuns();
    if (this.closed) return;
    if (this.claiming) {
      this.claimAgain = true;
      return;
    }
    if (this.pool.idle.length === 0) return;
    this.claiming = true;
    void this.claimLoop().finally(() => {
      this.claiming = false;
    });
  }

  private async claimLoop(): Promise<void> {
    do {
      this.claimAgain = false;
      // In the order a claim fills them, so a few executions spread over the workers.
      const offered = this.pool.spread(this.pool.idle);
      if (offered.length === 0) return;
      // Held while claiming, so a `repr run` does not take an executor its claim is about to use.
      for (const slot of offered) this.pool.claim(slot, { operationName: '(claiming)' });
      let claimed: Claimed[] = [];
      try {
        claimed = await this.state.claim(
          this.id,
          offered.map((s) => s.caps),
          (reqs, caps) => unmet(reqs, caps).length === 0,
          this.o.claimWindow ?? 200,
          () => randomUUID(),
        );
      } catch (e) {
        this.o.log.warn({ err: e }, 'could not claim queued executions');
      }
      const used = new Set<number>();
      for (const c of claimed) {
        used.add(c.slot);
        void this.execute(offered[c.slot]!, c);
      }
      for (const [i, slot] of offered.entries()) if (!used.has(i)) this.pool.free(slot);
      this.queueMayHaveWork = claimed.length > 0;
      if (claimed.length > 0) this.runsFirst = true;
      this.serveRuns();
      // Something was found: there may be more. Nothing: wait for a notification or the next beat.
      if (claimed.length > 0 && this.pool.idle.length > 0) this.claimAgain = true;
    } while (this.claimAgain && !this.closed);
  }

  private serveRuns(): void {
    if (this.runs.serve() > 0) this.runsFirst = false;
  }

  private abortLocal(name: string): void {
    this.running.get(name)?.abort.abort();
  }

  /** Carries out a claimed execution on the executor reserved for it, and records its outcome under the lease. */
  private async execute(slot: ExecutorSlot, c: Claimed): Promise<void> {
    const fn = digestFunctionFromValue(c.digestFunction);
    const actionDigest = makeDigest(fn, c.actionHash, c.actionSize);
    const abort = new AbortController();
    this.running.set(c.name, { claimed: c, abort });
    this.pool.claim(slot, { operationName: c.name, actionDigest });
    const action = Action.decode(c.action);
    const started = this.clock.now();
    let response: ExecuteResponse | undefined;
    if (c.cancelled) response = cancelledResponse();
    else if (c.attempts > this.maxAttempts) {
      response = ExecuteResponse.fromPartial({
        status: { code: Code.UNAVAILABLE, message: `gave up after ${c.attempts - 1} executors or schedulers were lost executing it` },
      });
    } else {
      const parent = c.trace ? extractTraceContext(c.trace, recordGetter) : undefined;
      const span = startSpan('execute', parent, { 'repr.executor': slot.id, 'repr.attempt': c.attempts, 'repr.scheduler': this.id });
      try {
        const trace = childContext(parent, span);
        response = await slot.execute(
          {
            operationName: c.name,
            instanceName: c.instanceName,
            fn,
            actionDigest,
            action,
            command: Command.decode(c.command),
            requirements: c.requirements,
            queuedAt: c.queuedAt,
            ...(trace ? { trace } : {}),
          },
          abort.signal,
        );
        endSpan(span);
        if (abort.signal.aborted) response = { ...cancelledResponse(), result: response.result };
      } catch (e) {
        endSpan(span, e);
        if (abort.signal.aborted) response = cancelledResponse();
        else if (e instanceof ExecutorLostError) {
          this.o.log.warn({ op: c.name, executor: slot.id, attempt: c.attempts, reason: e.message }, 'executor lost; re-queueing the action');
        } else {
          if (codeOf(e) !== Code.FAILED_PRECONDITION) this.o.log.error({ err: e, op: c.name, executor: slot.id }, 'executor failed');
          response = ExecuteResponse.fromPartial({ status: toStatus(e, `executor ${slot.id}`) });
        }
      }
    }
    this.pool.free(slot);
    this.running.delete(c.name);
    if (!response) {
      this.counters.requeued++;
      await this.persist(() => this.state.requeue(c.name, c.lease), c.name);
      this.dispatch();
      return;
    }
    await this.results.record({ name: c.name, instanceName: c.instanceName, actionDigest, action }, response, slot.owner);
    const recorded = await this.persist(() => this.state.finish(c.name, c.lease, encode(response)), c.name);
    if (recorded) {
      this.counters.completed++;
      this.outcomes[executionOutcome(response)]++;
      this.pool.credit(slot);
      this.load.executed(slot.caps, this.clock.now() - started);
    } else {
      this.counters.staleResults++;
      this.o.log.warn({ op: c.name, executor: slot.id }, 'dropped a result: its lease was taken back (this scheduler was taken for dead)');
    }
    this.dispatch();
  }

  /**
   * Retries a change of shared state until the database takes it: an
   * outcome lost to a blip would make the action execute again. Gives up
   * when this scheduler closes (the others take its leases back).
   */
  private async persist(change: () => Promise<boolean>, op: string): Promise<boolean> {
    const backoff = new Backoff({ initialMs: 100, maxMs: 5000 });
    for (;;) {
      try {
        return await change();
      } catch (e) {
        if (this.closed) return false;
        const ms = backoff.next();
        this.o.log.warn({ err: e, op, retryMs: ms }, 'could not record an execution in the shared state; retrying');
        await new Promise<void>((r) => this.clock.setTimeout(r, ms));
      }
    }
  }
}

function stateOf(rec: OperationRecord): OperationState {
  return {
    name: rec.name,
    instanceName: rec.instanceName,
    actionDigest: makeDigest(digestFunctionFromValue(rec.digestFunction), rec.actionHash, rec.actionSize),
    stage: rec.stage,
    ...(rec.response ? { response: ExecuteResponse.decode(rec.response) } : {}),
  };
}

function encode(r: ExecuteResponse): Uint8Array {
  return ExecuteResponse.encode(r).finish();
}

function cancelledResponse(): ExecuteResponse {
  return ExecuteResponse.fromPartial({ status: { code: Code.CANCELLED, message: 'operation cancelled' } });
}

function dedupe(caps: readonly ExecutorCapabilities[]): ExecutorCapabilities[] {
  return [...new Map(caps.map((c) => [JSON.stringify(c), c])).values()];
}
