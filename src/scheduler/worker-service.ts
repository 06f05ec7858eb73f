import { randomUUID } from 'node:crypto';
import type { ServerDuplexStream } from '@grpc/grpc-js';
import { toWire } from '../common/digest.js';
import { Code, codeOf } from '../common/errors.js';
import type { NodeQuery, RunFinished, RunRequest } from '../proto/repr/run/v1/run.js';
import type { RunHost } from '../run/run-executor.js';
import type { Logger } from '../common/logger.js';
import { toTimestamp } from '../common/time.js';
import type { ExecuteResponse } from '../proto/build/bazel/remote/execution/v2/remote_execution.js';
import {
  type Register,
  type SchedulerMessage,
  type WorkerMessage,
  WorkersService,
  type WorkersServer,
} from '../proto/repr/worker/v1/worker.js';
import type { ExecutionTask } from '../worker/local-executor.js';
import type { ExecutorCapabilities } from './platform.js';
import { ExecutorLostError, type ExecutorSlot, type Scheduler } from './scheduler.js';

export interface WorkerServiceOptions {
  scheduler: Scheduler;
  log: Logger;
  /** A worker silent for this long is dropped and its leases re-queued. */
  heartbeatTimeoutMs: number;
}

/** What `repr status` shows of one worker (or of the server's own executors). */
export interface WorkerGroup {
  name: string;
  address: string;
  slots: ExecutorSlot[];
  properties: Record<string, readonly string[]>;
  draining: boolean;
  connected: Date;
  lastHeartbeat?: Date;
}

/** A lease sent to the worker, settled by its result or by the worker's loss. */
interface Pending<T> {
  resolve(r: T): void;
  reject(e: Error): void;
}

type PendingLease = Pending<ExecuteResponse>;

interface PendingRun extends Pending<RunFinished> {
  /** The client the run's questions and output are relayed to. */
  host: RunHost;
}

type Stream = ServerDuplexStream<WorkerMessage, SchedulerMessage>;

/**
 * One connected worker: its executors are slots in the scheduler, each
 * execution is a lease sent down the stream, and the lease's promise settles
 * when the worker's result comes back, or rejects with ExecutorLostError when
 * the worker goes away, so that the scheduler runs the action elsewhere.
 * A lease id is used once: a result for a lease this session no longer holds
 * (because it was given up) is counted and dropped, never recorded.
 */
class WorkerSession implements WorkerGroup {
  readonly slots: ExecutorSlot[] = [];
  readonly properties: Record<string, string[]> = {};
  readonly connected = new Date();
  lastHeartbeat = new Date();
  draining = false;
  private readonly leases = new Map<string, PendingLease>();
  private readonly runs = new Map<string, PendingRun>();
  private closed = false;
  private readonly watchdog: NodeJS.Timeout;

  constructor(
    readonly name: string,
    readonly address: string,
    reg: Register,
    private readonly call: Stream,
    private readonly o: WorkerServiceOptions,
    private readonly onClose: (s: WorkerSession) => void,
  ) {
    for (const p of reg.properties) (this.properties[p.name] ??= []).push(p.value);
    const caps: ExecutorCapabilities = { properties: this.properties, cpus: reg.cpus, memoryBytes: reg.memoryBytes, networkAllowed: reg.networkAllowed };
    for (let i = 0; i < reg.executors; i++) {
      const slot: ExecutorSlot = { id: `${name}/${i}`, caps, execute: (task, signal) => this.lease(task, signal) };
      if (reg.runs) slot.run = (req, host, signal) => this.runLease(req, host, signal);
      this.slots.push(slot);
    }
    // Checked as often as the worker is asked to beat.
    this.watchdog = setInterval(() => {
      const silent = Date.now() - this.lastHeartbeat.getTime();
      if (silent > o.heartbeatTimeoutMs) this.lose(`no heartbeat for ${silent} ms (timeout ${o.heartbeatTimeoutMs} ms)`);
    }, this.heartbeatIntervalMs);
    this.watchdog.unref();
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
  private offer<T, P extends Pending<T>>(table: Map<string, P>, extra: Omit<P, keyof Pending<T>>, message: (leaseId: string) => SchedulerMessage, signal: AbortSignal): Promise<T> {
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

  private lease(task: ExecutionTask, signal: AbortSignal): Promise<ExecuteResponse> {
    return this.offer<ExecuteResponse, PendingLease>(
      this.leases,
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
    return this.offer<RunFinished, PendingRun>(this.runs, { host }, (leaseId) => ({ runLease: { leaseId, request: req } }), signal);
  }

  private relayQuery(q: NodeQuery): void {
    const run = this.runs.get(q.runId);
    if (!run) return;
    run.host.query(q.path, q.list).then(
      (node) => this.send({ runReply: { runId: q.runId, queryId: q.queryId, node, error: undefined } }),
      (e: unknown) => this.send({ runReply: { runId: q.runId, queryId: q.queryId, node: undefined, error: { code: codeOf(e), message: (e as Error).message, details: [] } } }),
    );
  }

  private send(m: SchedulerMessage): void {
    if (!this.closed) this.call.write(m);
  }

  onMessage(m: WorkerMessage): void {
    this.lastHeartbeat = new Date(); // any message shows the worker is alive
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
      const pending = this.leases.get(m.result.leaseId);
      if (!pending) {
        this.o.scheduler.noteStaleResult();
        this.o.log.warn({ worker: this.name, lease: m.result.leaseId }, 'ignored a result for a lease that was already given up');
        return;
      }
      this.leases.delete(m.result.leaseId);
      if (!m.result.response) pending.reject(new ExecutorLostError(`worker ${this.name} sent an empty result`));
      else pending.resolve(m.result.response);
    } else if (m.returned) {
      const pending = this.leases.get(m.returned.leaseId) ?? this.runs.get(m.returned.leaseId);
      this.leases.delete(m.returned.leaseId);
      this.runs.delete(m.returned.leaseId);
      pending?.reject(new ExecutorLostError(`worker ${this.name} gave it back: ${m.returned.reason}`));
    } else if (m.drain && !this.draining) {
      this.draining = true;
      this.o.log.info({ worker: this.name, running: this.leases.size }, 'worker is draining');
      for (const s of this.slots) this.o.scheduler.removeExecutor(s);
    }
  }

  /** Ends the session: every lease it holds goes back to the queue. */
  lose(reason: string, status: { code: Code; details: string } | 'ok' = { code: Code.UNAVAILABLE, details: reason }): void {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.watchdog);
    for (const s of this.slots) this.o.scheduler.removeExecutor(s);
    const lost = [...this.leases.values()];
    this.leases.clear();
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

  constructor(private readonly o: WorkerServiceOptions) {}

  groups(): WorkerGroup[] {
    return [...this.sessions.values()];
  }

  connect(call: Stream): void {
    let session: WorkerSession | undefined;
    const peer = call.getPeer();
    call.on('data', (m: WorkerMessage) => {
      if (session) return session.onMessage(m);
      const reg = m.register;
      if (!reg || !reg.workerName) {
        call.emit('error', { code: Code.INVALID_ARGUMENT, details: 'the first message on a worker stream must be a register with a worker_name' });
        return;
      }
      const old = this.sessions.get(reg.workerName);
      old?.lose('replaced by a new connection from the same worker');
      session = new WorkerSession(reg.workerName, peer, reg, call, this.o, (s) => {
        if (this.sessions.get(s.name) === s) this.sessions.delete(s.name);
      });
      this.sessions.set(reg.workerName, session);
      const ms = session.heartbeatIntervalMs;
      call.write({ welcome: { heartbeatInterval: { seconds: Math.floor(ms / 1000), nanos: (ms % 1000) * 1e6 }, schedulerVersion: '' } });
      this.o.log.info({ worker: reg.workerName, peer, executors: reg.executors, properties: session.properties }, 'worker connected');
      session.start();
    });
    // The worker half-closes when it is done (after draining); anything else is a loss.
    call.on('end', () => session?.lose('worker finished', 'ok'));
    call.on('error', (e: Error) => session?.lose(`stream error: ${e.message}`));
    call.on('cancelled', () => session?.lose('stream cancelled'));
  }

  close(): void {
    for (const s of [...this.sessions.values()]) s.lose('scheduler shutting down');
  }

  handlers(): WorkersServer {
    return { connect: (call) => this.connect(call) };
  }

  static readonly definition = WorkersService;
}
