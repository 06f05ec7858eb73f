import { randomUUID } from 'node:crypto';
import type { ServerDuplexStream } from '@grpc/grpc-js';
import { type Clock, systemClock } from '../common/clock.js';
import { toWire } from '../common/digest.js';
import { Code, codeOf, invalidArgument, ReprError, resourceExhausted, toReprError } from '../common/errors.js';
import { injectTraceContext } from '../common/tracing.js';
import { type NodeQuery, OutputChunk_Stream, type RunFinished, type RunRequest } from '../proto/repr/run/v1/run.js';
import type { Logger } from '../common/logger.js';
import { toTimestamp } from '../common/time.js';
import { type ExecuteResponse, ExecutionStage_Value } from '../proto/build/bazel/remote/execution/v2/remote_execution.js';
import type { Status } from '../proto/google/rpc/status.js';
import { type Register, type SchedulerMessage, type WorkerMessage, WorkersService, type WorkersServer } from '../proto/repr/worker/v1/worker.js';
import type { ExecutorCapabilities } from '../executor/platform.js';
import type { Scheduler } from '../scheduler/scheduler.js';
import type { RunHost } from '../executor/run-host.js';
import type { ExecutionTask } from '../executor/execution-task.js';
import { ExecutorLostError, type ExecutorOwner, type WorkerGroup, type ExecutorSlot } from '../executor/executor-slot.js';
import { callerOf } from '../grpc/access-interceptor.js';
import type { Caller } from '../grpc/access-policy.js';

export interface WorkerServiceOptions {
  scheduler: Scheduler;
  log: Logger;
  /** A worker silent for this long is dropped and its leases re-queued; a stream has as long to register. */
  heartbeatTimeoutMs: number;
  /** Executors one worker may register (execution.maxExecutorsPerWorker). */
  maxExecutorsPerWorker: number;
  /** Workers registered at once (execution.maxWorkers); as many more streams may wait to register. */
  maxWorkers: number;
  /** Decides heartbeat and registration deadlines and the times `repr status` shows. */
  clock?: Clock;
}

// A worker holds the worker permission, but a worker machine can be taken
// over like any other, so everything a worker sends is bounded. The gRPC message limit caps each message as a whole; these cap
// the fields that cost the scheduler, its logs, `repr status` or a run's
// client more than their bytes. No honest worker comes near them.

/** worker_name, version and property names. */
const MAX_NAME_BYTES = 256;
const MAX_PROPERTIES = 128;
/** Room for a container image reference with its digest. */
const MAX_PROPERTY_VALUE_BYTES = 1024;
const MAX_CPUS = 65536;
const MAX_MEMORY_BYTES = 2 ** 50;
/** The scheduler's own lease ids are 36-character UUIDs; anything longer is not one. */
const MAX_LEASE_ID_BYTES = 64;
const MAX_REASON_BYTES = 4096;
/** PATH_MAX. */
const MAX_PATH_BYTES = 4096;
/** Pipes deliver at most 64 KiB per read; a chunk is one read. */
const MAX_OUTPUT_CHUNK_BYTES = 1024 * 1024;
const MAX_SIGNAL_BYTES = 64;
/** What telemetry records per run; the worker sends its ten costliest files. */
const MAX_TOP_FILES = 100;
/**
 * Questions of one run relayed to its client and not answered yet: each is
 * held until the client answers, and FUSE has a few dozen requests in flight
 * at most, so more means a worker asking without waiting.
 */
const MAX_QUERIES_PER_RUN = 1024;
const MAX_STATUS_CODE = Code.UNAUTHENTICATED;

function checkSize(what: string, s: string | Uint8Array, max: number): void {
  const bytes = typeof s === 'string' ? Buffer.byteLength(s) : s.byteLength;
  if (bytes > max) throw invalidArgument(`${what} is ${bytes} bytes: at most ${max}`);
}

/** A string `repr status` prints to a terminal: no escape sequences, no forged lines. */
function checkLabel(what: string, s: string, max: number): void {
  checkSize(what, s, max);
  // biome-ignore lint/suspicious/noControlCharactersInRegex: finding control characters is the point: names are printed on terminals
  if (/[\u0000-\u001f\u007f-\u009f]/.test(s)) throw invalidArgument(`${what} contains control characters`);
}

function checkRange(what: string, n: number, min: number, max: number, unit = ''): void {
  if (!(Number.isFinite(n) && n >= min && n <= max)) throw invalidArgument(`${what} ${n} is out of range: a finite number from ${min} to ${max}${unit}`);
}

function checkStatus(what: string, st: Status | undefined): void {
  if (st && !(Number.isInteger(st.code) && st.code >= 0 && st.code <= MAX_STATUS_CODE))
    throw invalidArgument(`${what} status code ${st.code} is not a gRPC code`);
}

/** Throws INVALID_ARGUMENT naming the first field of a registration that is out of bounds. */
function checkRegister(reg: Register, maxExecutors: number): void {
  if (!reg.workerName) throw invalidArgument('the first message on a worker stream must be a register with a worker_name');
  checkLabel('worker_name', reg.workerName, MAX_NAME_BYTES);
  if (reg.executors < 1) throw invalidArgument(`executors ${reg.executors} is out of range: at least 1`);
  if (reg.executors > maxExecutors)
    throw invalidArgument(`executors ${reg.executors} is out of range: at most ${maxExecutors} per worker (execution.maxExecutorsPerWorker)`);
  if (reg.properties.length > MAX_PROPERTIES) throw invalidArgument(`${reg.properties.length} properties are too many: at most ${MAX_PROPERTIES}`);
  for (const [i, p] of reg.properties.entries()) {
    if (!p.name) throw invalidArgument(`properties[${i}].name is empty`);
    checkLabel(`properties[${i}].name`, p.name, MAX_NAME_BYTES);
    checkLabel(`properties[${i}].value`, p.value, MAX_PROPERTY_VALUE_BYTES);
  }
  checkRange('cpus', reg.cpus, 0, MAX_CPUS);
  checkRange('memory_bytes', reg.memoryBytes, 0, MAX_MEMORY_BYTES, ' (1 PiB)');
  checkLabel('version', reg.version, MAX_NAME_BYTES);
}

/** Throws INVALID_ARGUMENT naming the first field of a later message that is out of bounds. */
function checkMessage(m: WorkerMessage): void {
  const leaseId = (what: string, id: string) => checkSize(what, id, MAX_LEASE_ID_BYTES);
  if (m.register) {
    // A second register on a stream is ignored; its size is the gRPC limit's business.
  } else if (m.progress) {
    leaseId('progress.lease_id', m.progress.leaseId);
    const stage = m.progress.stage;
    if (!(Number.isInteger(stage) && stage >= ExecutionStage_Value.UNKNOWN && stage <= ExecutionStage_Value.COMPLETED))
      throw invalidArgument(`progress stage ${stage} is not a stage`);
  } else if (m.result) {
    leaseId('result.lease_id', m.result.leaseId);
    checkStatus('result', m.result.response?.status);
  } else if (m.returned) {
    leaseId('returned.lease_id', m.returned.leaseId);
    checkSize('returned.reason', m.returned.reason, MAX_REASON_BYTES);
  } else if (m.runQuery) {
    leaseId('run_query.run_id', m.runQuery.runId);
    checkSize('run_query.path', m.runQuery.path, MAX_PATH_BYTES);
  } else if (m.runOutput) {
    leaseId('run_output.run_id', m.runOutput.runId);
    const stream = m.runOutput.stream;
    if (stream !== OutputChunk_Stream.STDOUT && stream !== OutputChunk_Stream.STDERR)
      throw invalidArgument(`run_output stream ${stream} is neither stdout nor stderr`);
    checkSize('run_output.data', m.runOutput.data, MAX_OUTPUT_CHUNK_BYTES);
  } else if (m.runFinished) {
    // changes, accessed and listed are as long as the command made them; the message limit bounds them.
    const f = m.runFinished;
    leaseId('run_finished.run_id', f.runId);
    checkStatus('run_finished', f.status);
    checkSize('run_finished.signal', f.signal, MAX_SIGNAL_BYTES);
    const top = f.stats?.top.length ?? 0;
    if (top > MAX_TOP_FILES) throw invalidArgument(`run_finished.stats.top has ${top} entries: at most ${MAX_TOP_FILES}`);
  }
}

/** A lease sent to the worker, settled by its result or by the worker's loss. */
interface Pending<T> {
  resolve(r: T): void;
  reject(e: Error): void;
}

type PendingExecution = Pending<ExecuteResponse>;

interface PendingRun extends Pending<RunFinished> {
  /** The client the run's questions and output are relayed to. */
  host: RunHost;
  /** Questions relayed to the client and not answered yet. */
  asking: number;
}

type Stream = ServerDuplexStream<WorkerMessage, SchedulerMessage>;

/**
 * One connected worker: its executors are slots in the scheduler, each
 * execution is a lease sent down the stream, and the lease's promise settles
 * when the worker's result comes back, or rejects with ExecutorLostError when
 * the worker goes away, so that the scheduler executes the action elsewhere.
 * A lease id is used once: a result for a lease this session no longer holds
 * (because it was given up) is counted and dropped, never recorded.
 */
class WorkerSession implements WorkerGroup {
  readonly slots: ExecutorSlot[] = [];
  readonly properties: Record<string, string[]> = {};
  readonly connected: Date;
  lastHeartbeat: Date;
  draining = false;
  /** Action leases not settled yet, by lease id. */
  private readonly executions = new Map<string, PendingExecution>();
  /** `repr run` leases not settled yet, by lease id (the run id on the worker). */
  private readonly runs = new Map<string, PendingRun>();
  private closed = false;
  private cancelWatchdog: () => void = () => undefined;
  private readonly clock: Clock;

  readonly principal: string;

  constructor(
    readonly name: string,
    readonly address: string,
    /** Who connected: its permissions decide whether its results may be cached. */
    readonly caller: Caller,
    reg: Register,
    private readonly call: Stream,
    private readonly o: WorkerServiceOptions,
    private readonly onClose: (s: WorkerSession) => void,
  ) {
    this.clock = o.clock ?? systemClock;
    this.connected = new Date(this.clock.now());
    this.lastHeartbeat = this.connected;
    this.principal = caller.principal.name;
    for (const p of reg.properties) (this.properties[p.name] ??= []).push(p.value);
    const caps: ExecutorCapabilities = { properties: this.properties, cpus: reg.cpus, memoryBytes: reg.memoryBytes, networkAllowed: reg.networkAllowed };
    // Checked at every write, not once at connect: the check is the scheduler's, at the action cache's door.
    const owner: ExecutorOwner = { principal: this.principal, mayWriteCache: (instance) => caller.may('worker', instance) };
    for (let i = 0; i < reg.executors; i++) {
      const slot: ExecutorSlot = { id: `${name}/${i}`, caps, owner, execute: (task, signal) => this.executeLease(task, signal) };
      if (reg.runs) slot.run = (req, host, signal) => this.runLease(req, host, signal);
      this.slots.push(slot);
    }
    this.armWatchdog();
  }

  /** Checks for silence as often as the worker is asked to beat. */
  private armWatchdog(): void {
    this.cancelWatchdog = this.clock.setTimeout(() => {
      const silent = this.clock.now() - this.lastHeartbeat.getTime();
      if (silent > this.o.heartbeatTimeoutMs) this.lose(`no heartbeat for ${silent} ms (timeout ${this.o.heartbeatTimeoutMs} ms)`);
      else this.armWatchdog();
    }, this.heartbeatIntervalMs);
  }

  get heartbeatIntervalMs(): number {
    // Several beats per timeout, so one delayed beat does not drop a worker.
    return Math.max(50, Math.floor(this.o.heartbeatTimeoutMs / 4));
  }

  start(): void {
    for (const s of this.slots) this.o.scheduler.addExecutor(s);
  }

  /**
   * Sends a lease under a new id (used once) and resolves with its outcome;
   * aborting sends CancelLease.
   */
  private offer<T, P extends Pending<T>>(
    table: Map<string, P>,
    extra: Omit<P, keyof Pending<T>>,
    message: (leaseId: string) => SchedulerMessage,
    signal: AbortSignal,
  ): Promise<T> {
    if (this.closed) return Promise.reject(new ExecutorLostError(`worker ${this.name} is gone`));
    const leaseId = randomUUID();
    return new Promise<T>((resolve, reject) => {
      const onAbort = () => this.send({ cancel: { leaseId } });
      signal.addEventListener('abort', onAbort, { once: true });
      const done = () => signal.removeEventListener('abort', onAbort);
      table.set(leaseId, { ...extra, resolve: (r: T) => (done(), resolve(r)), reject: (e: Error) => (done(), reject(e)) } as P);
      this.send(message(leaseId));
    });
  }

  /** Sends an action to execute. */
  private executeLease(task: ExecutionTask, signal: AbortSignal): Promise<ExecuteResponse> {
    return this.offer<ExecuteResponse, PendingExecution>(
      this.executions,
      {},
      (leaseId) => ({
        lease: {
          leaseId,
          operationName: task.operationName,
          instanceName: task.instanceName,
          digestFunction: task.fn.value,
          actionDigest: toWire(task.actionDigest),
          action: task.action,
          command: task.command,
          requirements: task.requirements.map((r) => ({ name: r.name, value: r.value })),
          queuedTimestamp: toTimestamp(task.queuedAt),
          traceContext: injectTraceContext(task.trace),
        },
      }),
      signal,
    );
  }

  /**
   * A `repr run` on this worker: its questions and output are relayed
   * between the worker's stream and the client's. Losing the worker fails
   * the run rather than re-running it: its output has been streamed already.
   */
  private runLease(req: RunRequest, host: RunHost, signal: AbortSignal): Promise<RunFinished> {
    return this.offer<RunFinished, PendingRun>(this.runs, { host, asking: 0 }, (leaseId) => ({ runLease: { leaseId, request: req } }), signal);
  }

  private relayQuery(q: NodeQuery): void {
    const run = this.runs.get(q.runId);
    if (!run) return;
    if (run.asking >= MAX_QUERIES_PER_RUN) {
      const details = `worker ${this.name} has ${run.asking} questions of one run unanswered: at most ${MAX_QUERIES_PER_RUN} at once`;
      this.lose(details, { code: Code.RESOURCE_EXHAUSTED, details });
      return;
    }
    run.asking++;
    run.host.query(q.path, q.list).then(
      (node) => {
        run.asking--;
        this.send({ runReply: { runId: q.runId, queryId: q.queryId, node, error: undefined } });
      },
      (e: unknown) => {
        run.asking--;
        this.send({
          runReply: { runId: q.runId, queryId: q.queryId, node: undefined, error: { code: codeOf(e), message: (e as Error).message, details: [] } },
        });
      },
    );
  }

  private send(m: SchedulerMessage): void {
    if (!this.closed) this.call.write(m);
  }

  onMessage(m: WorkerMessage): void {
    try {
      checkMessage(m);
    } catch (e) {
      const err = toReprError(e);
      this.lose(`sent a bad message: ${err.message}`, { code: err.code, details: err.message });
      return;
    }
    this.lastHeartbeat = new Date(this.clock.now()); // any message shows the worker is alive
    if (m.runQuery) {
      this.relayQuery(m.runQuery);
    } else if (m.runOutput) {
      this.runs.get(m.runOutput.runId)?.host.output(m.runOutput.stream, Buffer.from(m.runOutput.data));
    } else if (m.runFinished) {
      const run = this.runs.get(m.runFinished.runId);
      this.runs.delete(m.runFinished.runId);
      if (run) run.resolve(m.runFinished);
      else this.o.scheduler.noteStaleResult();
    } else if (m.result) {
      const pending = this.executions.get(m.result.leaseId);
      if (!pending) {
        this.o.scheduler.noteStaleResult();
        this.o.log.warn({ worker: this.name, lease: m.result.leaseId }, 'ignored a result for a lease that was already given up');
        return;
      }
      this.executions.delete(m.result.leaseId);
      if (!m.result.response) pending.reject(new ExecutorLostError(`worker ${this.name} sent an empty result`));
      else pending.resolve(m.result.response);
    } else if (m.returned) {
      const pending = this.executions.get(m.returned.leaseId) ?? this.runs.get(m.returned.leaseId);
      this.executions.delete(m.returned.leaseId);
      this.runs.delete(m.returned.leaseId);
      pending?.reject(new ExecutorLostError(`worker ${this.name} gave it back: ${m.returned.reason}`));
    } else if (m.drain) {
      this.drain('the worker is shutting down');
    }
  }

  /** Takes the worker's executors out of rotation: it gets no new work; what it executes finishes. */
  drain(why: string): void {
    if (this.draining || this.closed) return;
    this.draining = true;
    this.o.log.info({ worker: this.name, executing: this.executions.size, runs: this.runs.size, why }, 'worker is draining');
    for (const s of this.slots) this.o.scheduler.removeExecutor(s);
  }

  /** Ends the session: every lease it holds goes back to the queue. */
  lose(reason: string, status: { code: Code; details: string } | 'ok' = { code: Code.UNAVAILABLE, details: reason }): void {
    if (this.closed) return;
    this.closed = true;
    this.cancelWatchdog();
    for (const s of this.slots) this.o.scheduler.removeExecutor(s);
    const lost = [...this.executions.values()];
    this.executions.clear();
    if (lost.length > 0 || status !== 'ok') this.o.log.warn({ worker: this.name, leases: lost.length, reason }, 'worker disconnected');
    for (const p of lost) p.reject(new ExecutorLostError(`worker ${this.name} lost: ${reason}`));
    for (const r of this.runs.values()) r.reject(new ExecutorLostError(`worker ${this.name} lost: ${reason}`));
    this.runs.clear();
    this.onClose(this);
    try {
      if (status === 'ok') this.call.end();
      else this.call.emit('error', { ...status, message: status.details });
    } catch {
      /* the stream is gone already */
    }
  }
}

/**
 * The scheduler's side of `repr worker`: accepts worker streams (Workers.Connect)
 * and turns each registered worker into executor slots of the scheduler.
 */
export class WorkerService {
  private readonly sessions = new Map<string, WorkerSession>();
  private readonly unregistered = new Set<Stream>();
  private readonly clock: Clock;

  constructor(private readonly o: WorkerServiceOptions) {
    this.clock = o.clock ?? systemClock;
  }

  groups(): WorkerGroup[] {
    return [...this.sessions.values()];
  }

  connect(call: Stream): void {
    let session: WorkerSession | undefined;
    let refused = false;
    const peer = call.getPeer();
    let cancelRegisterBy: (() => void) | undefined;
    const settle = () => {
      cancelRegisterBy?.();
      this.unregistered.delete(call);
    };
    const refuse = (e: unknown) => {
      if (refused) return;
      refused = true;
      settle();
      const err = toReprError(e);
      this.o.log.warn({ peer, code: Code[err.code], reason: err.message }, 'refused a worker');
      call.emit('error', err);
    };
    // The access interceptor vouched for the worker permission; without it nobody is let in.
    const caller = callerOf(call.metadata);
    if (!caller) {
      refuse(new ReprError(Code.PERMISSION_DENIED, 'no authenticated caller for this worker stream'));
      return;
    }
    // Streams that have not registered yet are bounded in number and in time.
    if (this.unregistered.size >= this.o.maxWorkers) {
      refuse(resourceExhausted(`${this.unregistered.size} worker streams are waiting to register: at most ${this.o.maxWorkers} (execution.maxWorkers)`));
      return;
    }
    cancelRegisterBy = this.clock.setTimeout(
      () => refuse(new ReprError(Code.DEADLINE_EXCEEDED, `no register within ${this.o.heartbeatTimeoutMs} ms of connecting`)),
      this.o.heartbeatTimeoutMs,
    );
    this.unregistered.add(call);
    call.on('data', (m: WorkerMessage) => {
      if (session) return session.onMessage(m);
      if (refused) return;
      const reg = m.register;
      try {
        if (!reg) throw invalidArgument('the first message on a worker stream must be a register with a worker_name');
        checkRegister(reg, this.o.maxExecutorsPerWorker);
        // A worker reconnecting under its own name takes its old place; another principal may not take it.
        const holder = this.sessions.get(reg.workerName);
        if (holder && holder.caller.owner !== caller.owner) {
          throw new ReprError(
            Code.PERMISSION_DENIED,
            `worker name ${JSON.stringify(reg.workerName)} is held by principal ${JSON.stringify(holder.principal)}, not ${JSON.stringify(caller.principal.name)}`,
          );
        }
        if (!holder && this.sessions.size >= this.o.maxWorkers) {
          throw resourceExhausted(`${this.sessions.size} workers are connected: at most ${this.o.maxWorkers} (execution.maxWorkers)`);
        }
      } catch (e) {
        refuse(e);
        return;
      }
      settle();
      const old = this.sessions.get(reg.workerName);
      // The same worker back after a restart or a cut its old stream has not
      // noticed yet: the newcomer wins. Were it another live worker under the
      // same name, the two would take turns forever; ALREADY_EXISTS tells
      // the one replaced to stop rather than reconnect.
      if (old) {
        const details = `worker name ${JSON.stringify(reg.workerName)} was taken by a new connection from ${peer}`;
        old.lose(`replaced by a new connection from ${peer}`, { code: Code.ALREADY_EXISTS, details });
      }
      session = new WorkerSession(reg.workerName, peer, caller, reg, call, this.o, (s) => {
        if (this.sessions.get(s.name) === s) this.sessions.delete(s.name);
      });
      this.sessions.set(reg.workerName, session);
      const ms = session.heartbeatIntervalMs;
      call.write({ welcome: { heartbeatInterval: { seconds: Math.floor(ms / 1000), nanos: (ms % 1000) * 1e6 }, schedulerVersion: '' } });
      this.o.log.info(
        { worker: reg.workerName, principal: caller.principal.name, via: caller.principal.via, peer, executors: reg.executors, properties: session.properties },
        'worker connected',
      );
      session.start();
    });
    // The worker half-closes when it is done (after draining); anything else is a loss.
    call.on('end', () => {
      settle();
      session?.lose('worker finished', 'ok');
    });
    call.on('error', (e: Error) => {
      settle();
      session?.lose(`stream error: ${e.message}`);
    });
    call.on('cancelled', () => {
      settle();
      session?.lose('stream cancelled');
    });
  }

  /**
   * Takes a connected worker out of rotation from this side (the autoscaler
   * does, before its provider stops the worker); false if none has that name.
   */
  drain(name: string, why: string): boolean {
    const s = this.sessions.get(name);
    s?.drain(why);
    return s !== undefined;
  }

  close(): void {
    for (const s of [...this.sessions.values()]) s.lose('scheduler shutting down');
  }

  handlers(): WorkersServer {
    return { connect: (call) => this.connect(call) };
  }

  static readonly definition = WorkersService;
}
