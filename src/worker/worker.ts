import type { ClientDuplexStream } from '@grpc/grpc-js';
import { digestFunctionFromValue, fromWire } from '../common/digest.js';
import { Code, codeOf, ReprError, toStatus } from '../common/errors.js';
import type { Logger } from '../common/logger.js';
import { toMillis } from '../common/time.js';
import { Action, Command, ExecuteResponse, ExecutionStage_Value } from '../proto/build/bazel/remote/execution/v2/remote_execution.js';
import { type Lease, type RunLease, type SchedulerMessage, type WorkerMessage, WorkersClient } from '../proto/repr/worker/v1/worker.js';
import { RunFinished } from '../proto/repr/run/v1/run.js';
import { PendingQueries } from '../executor/pending-queries.js';
import { failureReason, isConnectFailure } from '../grpc/connect-failure.js';
import { type DialTls, dial, isTlsTarget, normalizeTarget } from '../grpc/dial.js';
import { http1StatusLine } from '../grpc/http1-probe.js';
import type { Sandbox } from '../sandbox/sandbox.js';
import type { InputLimits } from './input-root.js';
import { createExecutors } from './create-executors.js';
import { clearWorkDir } from './run-dir.js';
import type { ExecutorSlot } from '../executor/executor-slot.js';
import { type Clock, systemClock } from '../common/clock.js';
import { WorkerCas } from './worker-cas.js';
import { claimWorkerDir, removeStaleWorkerDirs } from './worker-dir.js';
import type { DirLock } from '../common/dir-lock.js';
import type { RunHost } from '../executor/run-host.js';
import { extractTraceContext, recordGetter } from '../common/tracing.js';
import { endpointTls, type ResolveHost, resolveSchedulers, type SchedulerEndpoint } from './scheduler-endpoints.js';
import { type AttemptEnd, SchedulerRotation, startingPoint } from './scheduler-rotation.js';

export interface WorkerOptions {
  /**
   * Called once if the worker gives up for good (the target is not a repr
   * scheduler, another worker took its name); the worker has stopped by then. Without it the worker just stops.
   */
  onFatal?: (err: ReprError) => void;
  /**
   * grpc://host:port or grpcs://host:port of each scheduler the worker may
   * take work from (see SchedulerRotation); a name may resolve to several.
   */
  schedulers: readonly string[];
  /** grpc://host:port or grpcs://host:port of the CAS, if not that of the scheduler the worker is connected to. */
  cas?: string;
  /** How scheduler names become addresses; default the system's resolver (as getaddrinfo sees /etc/hosts and DNS). */
  resolveHost?: ResolveHost;
  /** How grpcs:// channels (scheduler, CAS) check the server and show this worker. */
  tls?: DialTls;
  /** Unique among the scheduler's workers; stable across reconnects. */
  name: string;
  executors: number;
  properties: Record<string, string[]>;
  cpus: number;
  memoryBytes: number;
  allowNetwork: boolean;
  /** Local CAS cache. */
  cacheDir: string;
  cacheBytes: number;
  /** Scratch space for input roots. */
  workDir: string;
  /** Locked for the worker's life (see claimWorkerDir); holds cacheDir and workDir by default. */
  dataDir?: string;
  /** Other workers' directories to remove when unused this long (see removeStaleWorkerDirs). */
  staleSweep?: { parent: string; maxAgeMs: number };
  sandbox: Sandbox;
  defaultTimeoutMs: number;
  maxTimeoutMs: number;
  /** Bounds on an action's input root (default DEFAULT_INPUT_LIMITS). */
  inputLimits?: InputLimits;
  log: Logger;
  /** Bearer token for a scheduler (and CAS) that requires one. */
  token?: string;
  /** Where `repr run`s write (see RunExecutorOptions.writes). */
  runWrites?: 'overlay' | 'fuse';
  /** Timestamps, deadlines and retry delays; default the system clock. */
  clock?: Clock;
  /** Spreads retry delays (see SchedulerRotation); default Math.random. */
  random?: () => number;
}

type Call = ClientDuplexStream<WorkerMessage, SchedulerMessage>;

interface HeldLease {
  abort: AbortController;
  /** Set when the lease was handed back: its result must not be sent. */
  returned?: boolean;
  done: Promise<void>;
}

/** How often a running worker marks its directory as in use: far below any sensible staleDays. */
const TOUCH_EVERY_MS = 60 * 60 * 1000;

const seconds = (ms: number) => `${(ms / 1000).toFixed(ms < 10_000 ? 1 : 0)} s`;

const sleep = (clock: Clock, ms: number) => new Promise<void>((r) => clock.setTimeout(r, ms));

/**
 * `repr worker`: keeps a stream open to one scheduler of its list, carries
 * out the leases it is sent (actions to execute, `repr run`s) with sandboxed
 * executors, and sends results back. When the stream breaks, the scheduler
 * side has already taken back every lease (or, with shared state, the other
 * schedulers will), so the worker abandons what it holds: a result is only
 * meaningful on the stream whose lease id it carries, and another scheduler
 * would not know that id. It then connects to the next scheduler of the
 * list (see SchedulerRotation).
 */
export class Worker {
  /** The channel of the stream open now, if any. */
  private client?: InstanceType<typeof WorkersClient>;
  private readonly idle: ExecutorSlot[];
  /** Questions of running `repr run`s waiting for the client's answer, by lease. */
  private readonly runQueries = new Map<string, PendingQueries>();
  private readonly runsSupported: boolean;
  private readonly clock: Clock;
  /** Leases being carried out, by id. */
  private readonly leases = new Map<string, HeldLease>();
  private call?: Call;
  private cancelTouch = () => {};
  private stopping = false;
  private stopped?: Promise<void>;
  private readonly closeExecutors: () => Promise<void>;

  private constructor(
    private readonly o: WorkerOptions,
    private readonly cas: WorkerCas,
    private readonly lock?: DirLock,
  ) {
    this.clock = o.clock ?? systemClock;
    const executors = createExecutors({
      count: o.executors,
      id: (i) => `${o.name}/${i}`,
      caps: { properties: o.properties, cpus: o.cpus, memoryBytes: o.memoryBytes, networkAllowed: o.allowNetwork },
      cas: (instance: string) => cas.forInstance(instance),
      sandbox: o.sandbox,
      workDir: o.workDir,
      log: o.log,
      defaultTimeoutMs: o.defaultTimeoutMs,
      maxTimeoutMs: o.maxTimeoutMs,
      clock: this.clock,
      ...(o.inputLimits ? { inputLimits: o.inputLimits } : {}),
      ...(o.runWrites ? { runWrites: o.runWrites } : {}),
    });
    this.idle = executors.slots;
    this.closeExecutors = executors.close;
    this.runsSupported = this.idle.every((slot) => slot.run !== undefined);
    if (lock) this.touchLock(lock);
  }

  /** Keeps the directory's last use current while the worker runs, as seen by other workers' stale sweeps. */
  private touchLock(lock: DirLock): void {
    lock.touch(new Date(this.clock.now()));
    if (!this.stopping) this.cancelTouch = this.clock.setTimeout(() => this.touchLock(lock), TOUCH_EVERY_MS);
  }

  static async start(o: WorkerOptions): Promise<Worker> {
    // Before the scratch space is emptied: it may be another live worker's.
    const lock = o.dataDir === undefined ? undefined : claimWorkerDir(o.dataDir);
    try {
      const clock = o.clock ?? systemClock;
      if (o.staleSweep && o.dataDir !== undefined) removeStaleWorkerDirs({ ...o.staleSweep, own: o.dataDir, now: clock.now(), log: o.log });
      clearWorkDir(o.workDir); // leftovers of a crash
      // Unreadable TLS files are a mistake to report now, not a scheduler to retry.
      for (const target of o.schedulers) dial(target, endpointTls(target, o.tls));
      const target = o.cas ?? o.schedulers[0]!;
      const cas = await WorkerCas.open({ target, cacheDir: o.cacheDir, cacheBytes: o.cacheBytes, log: o.log, token: o.token, ...endpointTls(target, o.tls) });
      const w = new Worker(o, cas, lock);
      void w.loop();
      return w;
    } catch (e) {
      lock?.release();
      throw e;
    }
  }

  private async loop(): Promise<void> {
    const rotation = new SchedulerRotation({ start: startingPoint(this.o.name), ...(this.o.random ? { random: this.o.random } : {}) });
    let endpoints = await this.resolve();
    let endpoint = rotation.next(endpoints);
    while (!this.stopping) {
      // Executors still winding down abandoned leases must be free before
      // registering again, or the scheduler would lease them at once.
      await Promise.all([...this.leases.values()].map((r) => r.done));
      // The inputs of an action are where its scheduler's clients put them.
      if (this.o.cas === undefined) await this.cas.retarget(endpoint.target, endpointTls(endpoint.target, this.o.tls, endpoint.serverName).tls);
      const { reason, code, registered } = await this.session(endpoint);
      if (this.stopping) break;
      const at = endpoint.label;
      if (code === Code.ALREADY_EXISTS) {
        // Another process runs under this name: taking work elsewhere would leave two workers fighting over one name.
        return this.giveUp(
          reason,
          new ReprError(
            Code.ALREADY_EXISTS,
            `another worker connected to ${at} under this worker's name ${JSON.stringify(this.o.name)} and took its place (${reason}); give each worker its own --name`,
          ),
        );
      }
      const notScheduler = await this.notScheduler(endpoint, reason, code);
      const credentials = code === Code.PERMISSION_DENIED || code === Code.UNAUTHENTICATED;
      const end: AttemptEnd = notScheduler ? 'not-a-scheduler' : credentials ? 'credentials' : registered ? 'lost' : 'unreachable';
      const why =
        notScheduler ??
        (credentials
          ? `the scheduler at ${at} refused this worker's credentials (${reason}); a worker's principal needs the worker role on every instance (e.g. --auth-grant NAME=worker on the scheduler)`
          : registered
            ? `lost the scheduler at ${at} (${reason})`
            : // A connection failure explained already reads "cannot reach URL: why; what to do".
              reason.startsWith('cannot reach ')
              ? reason
              : `cannot reach the scheduler at ${at} (${reason})`);
      const several = endpoints.length > 1;
      const log = (fields: Record<string, unknown>, msg: string) =>
        end === 'credentials' || end === 'not-a-scheduler' ? this.o.log.error(fields, msg) : this.o.log.warn(fields, msg);
      const verdict = rotation.ended(end, registered);
      if (verdict.next === 'never') {
        const list = verdict.tried.join(', ');
        return this.giveUp(reason, new ReprError(Code.FAILED_PRECONDITION, several ? `none of ${list} is a repr scheduler; the last: ${why}` : why));
      }
      if (verdict.next === 'later') {
        const { delayMs } = verdict;
        const round = several ? `; none of ${verdict.tried.join(', ')} took this worker` : '';
        log({ reason, retryInMs: delayMs }, `${why}${round}; ${end === 'lost' && !several ? 'reconnecting' : 'retrying'} in ${seconds(delayMs)}`);
        await sleep(this.clock, delayMs);
      }
      endpoints = await this.resolve();
      endpoint = rotation.next(endpoints);
      if (verdict.next === 'now') log({ reason, next: endpoint.target }, `${why}; connecting to ${endpoint.label}`);
    }
  }

  private resolve(): Promise<SchedulerEndpoint[]> {
    return resolveSchedulers(this.o.schedulers, this.o.resolveHost);
  }

  private giveUp(reason: string, fatal: ReprError): void {
    this.o.log.error({ reason }, fatal.message);
    this.stopping = true;
    this.o.onFatal?.(fatal);
  }

  /**
   * Why a session's end means that `endpoint` is no repr scheduler and
   * never will be (a cache-only server, a web server), or undefined.
   */
  private async notScheduler(endpoint: SchedulerEndpoint, reason: string, code: number | undefined): Promise<string | undefined> {
    const at = endpoint.label;
    const notScheduler = (what: string) => `${at} is not a repr scheduler: ${what} (${reason}); point --scheduler at a repr server with execution enabled`;
    if (code === Code.UNIMPLEMENTED) {
      // A cache-only repr server, another REAPI server, or an HTTP/2 server (grpc-js reads its 404 as UNIMPLEMENTED).
      return notScheduler('it does not serve the worker protocol (a cache-only server, another REAPI server, or not gRPC)');
    }
    if (code === Code.UNAVAILABLE && /Protocol error/.test(reason) && !isTlsTarget(endpoint.target)) {
      // What grpc-js says of an HTTP/1 server; a web server at that address will not turn into a scheduler.
      const { hostname, port } = new URL(normalizeTarget(endpoint.target)!.replace(/^grpc:/, 'http:'));
      const line = await http1StatusLine(hostname.replace(/^\[(.*)\]$/, '$1'), Number(port));
      if (line) return notScheduler(`an HTTP/1 server answered "${line}"`);
    }
    return undefined;
  }

  /** One stream's life; resolves with why it ended, the gRPC code if a status ended it, and whether the scheduler took the worker. */
  private session(endpoint: SchedulerEndpoint): Promise<{ reason: string; code?: number; registered: boolean }> {
    return new Promise((resolve) => {
      let client: InstanceType<typeof WorkersClient>;
      try {
        // A scheduler that vanished without closing the connection (a cut
        // cable, a frozen VM) is noticed by these pings, not by TCP minutes later.
        const d = dial(endpoint.target, {
          token: this.o.token,
          keepaliveMs: 20_000,
          keepaliveTimeoutMs: 10_000,
          ...endpointTls(endpoint.target, this.o.tls, endpoint.serverName),
        });
        client = new WorkersClient(d.address, d.credentials, d.options);
      } catch (e) {
        // TLS files unreadable since the start (mid-rotation, say): retried like an unreachable scheduler.
        resolve({ reason: (e as Error).message, registered: false });
        return;
      }
      this.client = client;
      const call = client.connect();
      this.call = call;
      let beat: NodeJS.Timeout | undefined;
      let ended = false;
      let registered = false;
      const end = (reason: string, code?: number) => {
        if (ended) return;
        ended = true;
        clearInterval(beat);
        if (this.call === call) this.call = undefined;
        if (this.client === client) this.client = undefined;
        client.close();
        // The scheduler re-queued these already; finishing them would be wasted work.
        for (const r of this.leases.values()) {
          r.returned = true;
          r.abort.abort();
        }
        resolve({ reason, registered, ...(code !== undefined ? { code } : {}) });
      };
      call.on('data', (m: SchedulerMessage) => {
        if (m.welcome) {
          registered = true;
          const d = m.welcome.heartbeatInterval;
          const ms = toMillis(d) || 1000;
          clearInterval(beat);
          beat = setInterval(() => this.send(call, { heartbeat: {} }), Math.max(20, ms));
          const via = endpoint.label === endpoint.target ? {} : { via: endpoint.label };
          this.o.log.info({ scheduler: endpoint.target, ...via, heartbeatMs: ms }, 'registered with the scheduler');
          if (this.stopping) this.send(call, { drain: {} });
        } else if (m.lease) {
          this.startLease(call, m.lease);
        } else if (m.runLease) {
          this.startRun(call, m.runLease);
        } else if (m.runReply) {
          this.runQueries.get(m.runReply.runId)?.settle(m.runReply);
        } else if (m.cancel) {
          this.leases.get(m.cancel.leaseId)?.abort.abort();
        }
      });
      call.on('error', (e: Error & { code?: number; details?: string }) =>
        // A connection failure's details name the cause (an untrusted or refused certificate) and the fix already.
        end(isConnectFailure(e) ? e.details! : `${Code[e.code ?? Code.UNKNOWN] ?? e.code}: ${failureReason(e.details ?? e.message)}`, e.code),
      );
      call.on('end', () => end('scheduler closed the stream'));
      call.on('status', (s: { code: number; details: string }) => end(`status ${s.code}: ${s.details}`, s.code));
      this.send(call, {
        register: {
          workerName: this.o.name,
          executors: this.o.executors,
          properties: Object.entries(this.o.properties).flatMap(([name, vs]) => vs.map((value) => ({ name, value }))),
          cpus: this.o.cpus,
          memoryBytes: this.o.memoryBytes,
          networkAllowed: this.o.allowNetwork,
          version: '',
          runs: this.runsSupported,
        },
      });
    });
  }

  private send(call: Call, m: WorkerMessage): void {
    try {
      call.write(m);
    } catch {
      /* the stream is closing; its end handler deals with it */
    }
  }

  /**
   * Holds an idle executor for a lease until `work` settles, or calls
   * `refuse` when there is none (the scheduler sends at most one lease per
   * executor, so that is a race with draining) or the worker is draining.
   */
  private occupy(leaseId: string, refuse: (reason: string) => void, work: (executor: ExecutorSlot, entry: HeldLease) => Promise<void>): void {
    const executor = this.idle.pop();
    if (!executor || this.stopping) {
      refuse(executor ? 'worker is draining' : 'no idle executor');
      if (executor) this.idle.push(executor);
      return;
    }
    const entry: HeldLease = { abort: new AbortController(), done: Promise.resolve() };
    this.leases.set(leaseId, entry);
    entry.done = work(executor, entry)
      .catch((e: unknown) => this.o.log.error({ err: e, lease: leaseId }, 'lease failed unexpectedly'))
      .finally(() => {
        this.leases.delete(leaseId);
        this.idle.push(executor);
      });
  }

  private startLease(call: Call, lease: Lease): void {
    const leaseId = lease.leaseId;
    this.occupy(
      leaseId,
      (reason) => this.send(call, { returned: { leaseId, reason } }),
      async (executor, entry) => {
        this.send(call, { progress: { leaseId, stage: ExecutionStage_Value.EXECUTING } });
        // At debug: one line per action, so an operator (or a test) can tell which worker executed what, and how often.
        this.o.log.debug({ lease: leaseId, op: lease.operationName, executor: executor.id }, 'executing an action');
        const response = await this.executeLease(lease, executor, entry.abort.signal);
        if (!entry.returned && this.call === call) this.send(call, { result: { leaseId, response } });
      },
    );
  }

  /** A `repr run`: its questions and output go up this stream, which the scheduler relays to the client. */
  private startRun(call: Call, lease: RunLease): void {
    const leaseId = lease.leaseId;
    const req = lease.request;
    const refuse = (reason: string) =>
      this.send(call, {
        runFinished: RunFinished.fromPartial({ runId: leaseId, status: { code: Code.UNAVAILABLE, message: `worker ${this.o.name}: ${reason}` } }),
      });
    if (!req) {
      refuse('the lease carries no run request');
      return;
    }
    this.occupy(leaseId, refuse, async (executor, entry) => {
      if (!executor.run) return refuse('this worker takes no `repr run`s');
      const { signal } = entry.abort;
      const queries = new PendingQueries((queryId, path, list) => this.send(call, { runQuery: { runId: leaseId, queryId, path, list } }), signal);
      this.runQueries.set(leaseId, queries);
      const host: RunHost = {
        // A question sent on a stream that has since been replaced would never be answered.
        query: (path, list) => (this.call === call ? queries.ask(path, list) : Promise.reject(new ReprError(Code.CANCELLED, 'run cancelled'))),
        output: (stream, data) => this.send(call, { runOutput: { runId: leaseId, stream, data } }),
      };
      try {
        const finished = await executor.run(req, host, signal);
        if (!entry.returned && this.call === call) this.send(call, { runFinished: { ...finished, runId: leaseId } });
      } finally {
        this.runQueries.delete(leaseId);
      }
    });
  }

  /** Executes an action's lease; failures of the worker itself become statuses, as with built-in executors. */
  private async executeLease(lease: Lease, executor: ExecutorSlot, signal: AbortSignal): Promise<ExecuteResponse> {
    try {
      const fn = digestFunctionFromValue(lease.digestFunction);
      const d = lease.queuedTimestamp;
      const trace = extractTraceContext(lease.traceContext, recordGetter);
      return await executor.execute(
        {
          operationName: lease.operationName,
          instanceName: lease.instanceName,
          fn,
          actionDigest: fromWire(fn, lease.actionDigest, 'lease.action_digest'),
          action: lease.action ?? Action.fromPartial({}),
          command: lease.command ?? Command.fromPartial({}),
          requirements: lease.requirements.map((p) => ({ name: p.name, value: p.value })),
          queuedAt: new Date(d ? toMillis(d) : this.clock.now()),
          ...(trace ? { trace } : {}),
        },
        signal,
      );
    } catch (e) {
      if (codeOf(e) !== Code.FAILED_PRECONDITION) this.o.log.error({ err: e, op: lease.operationName }, 'executor failed');
      return ExecuteResponse.fromPartial({ status: toStatus(e, `worker ${this.o.name}`) });
    }
  }

  get busy(): number {
    return this.leases.size;
  }

  /**
   * Stops taking work, lets leases in progress finish for up to `graceMs`,
   * hands the rest back to the scheduler, closes the stream and the cache.
   */
  drain(graceMs: number): Promise<void> {
    this.stopped ??= (async () => {
      this.stopping = true;
      const call = this.call;
      if (call) this.send(call, { drain: {} });
      const all = Promise.all([...this.leases.values()].map((r) => r.done));
      const timedOut = await Promise.race([all.then(() => false), sleep(this.clock, graceMs).then(() => true)]);
      if (timedOut) {
        for (const [leaseId, r] of this.leases) {
          r.returned = true;
          r.abort.abort();
          if (call) this.send(call, { returned: { leaseId, reason: `worker ${this.o.name} is shutting down` } });
        }
        await all;
      }
      if (call && this.call === call) {
        // Half-close; the scheduler ends the stream in answer.
        await new Promise<void>((resolve) => {
          const t = setTimeout(resolve, 2000);
          call.once('status', () => {
            clearTimeout(t);
            resolve();
          });
          call.end();
        });
      }
      this.client?.close();
      await this.closeExecutors();
      await this.cas.close();
      this.cancelTouch();
      this.lock?.release();
    })();
    return this.stopped;
  }
}
