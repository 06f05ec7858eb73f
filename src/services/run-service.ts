import type { Metadata, ServerDuplexStream } from '@grpc/grpc-js';
import { type Clock, systemClock } from '../common/clock.js';
import { Code, ReprError, toStatus } from '../common/errors.js';
import type { Logger } from '../common/logger.js';
import type { InstanceNames } from './instances.js';
import { type ClientMessage, type RunFinished, type RunRequest, RunnerService, type RunnerServer, type ServerMessage } from '../proto/repr/run/v1/run.js';
import type { Scheduler } from '../scheduler/scheduler.js';
import type { TelemetrySink } from '../observability/telemetry.js';
import { PendingQueries } from '../executor/pending-queries.js';
import { checkRunRequest } from '../executor/run-request.js';
import { ExecutorLostError } from '../executor/executor-slot.js';
import { runRequirements, type RunHost } from '../executor/run-host.js';
import { requireCaller } from '../grpc/access-interceptor.js';

export interface RunServiceOptions {
  scheduler: Scheduler;
  instances: InstanceNames;
  log: Logger;
  telemetry?: TelemetrySink;
  /** Times how long each run waits for an executor. */
  clock?: Clock;
}

type Stream = ServerDuplexStream<ClientMessage, ServerMessage>;

/**
 * Runs one stream may have at once (queued or running). Each waiting run
 * holds state here and a place in the scheduler's queue; a client fanning
 * out a batch keeps a few per executor in flight, far fewer than this.
 */
const MAX_RUNS_PER_STREAM = 1024;

interface ActiveRun {
  abort: AbortController;
  queries: PendingQueries;
}

/**
 * Runner.Session: one stream per client connection, any number of runs on
 * it at once. Each run waits for an executor that can mount FUSE (built-in,
 * or a worker's, reached through the scheduler), and its questions to the
 * client go up this stream. A stream that breaks cancels its runs: their
 * processes are killed and their mounts removed.
 */
export class RunService {
  constructor(private readonly o: RunServiceOptions) {}

  session(call: Stream): void {
    const runs = new Map<string, ActiveRun>();
    let closing = false;
    let broken = false;
    const send = (m: ServerMessage) => {
      if (broken) return;
      try {
        call.write(m);
      } catch {
        /* the stream is gone; its handlers clean up */
      }
    };
    const endIfIdle = () => {
      if (closing && runs.size === 0 && !broken) call.end();
    };
    const breakAll = (why: string) => {
      if (broken) return;
      broken = true;
      for (const [id, r] of runs) {
        this.o.log.info({ run: id, why }, 'client went away; stopping its run');
        r.queries.rejectAll(why);
        r.abort.abort();
      }
    };
    call.on('data', (m: ClientMessage) => {
      if (m.run) this.start(m.run, runs, send, call.metadata).finally(endIfIdle);
      else if (m.reply) runs.get(m.reply.runId)?.queries.settle(m.reply);
      else if (m.cancel) runs.get(m.cancel.runId)?.abort.abort();
    });
    // A half-close means no more runs; the stream ends when the last one does.
    call.on('end', () => {
      closing = true;
      endIfIdle();
    });
    call.on('cancelled', () => breakAll('the client cancelled the stream'));
    call.on('error', (e: Error) => breakAll(`stream error: ${e.message}`));
    call.on('close', () => {
      if (runs.size > 0) breakAll('the stream closed');
    });
  }

  private async start(req: RunRequest, runs: Map<string, ActiveRun>, send: (m: ServerMessage) => void, metadata: Metadata): Promise<void> {
    const finish = (f: RunFinished) => send({ finished: f });
    const fail = (e: unknown) =>
      finish({ runId: req.runId, status: toStatus(e), exitCode: -1, signal: '', changes: [], accessed: [], listed: [], stats: undefined });
    if (runs.has(req.runId)) return fail(new ReprError(Code.ALREADY_EXISTS, `run ${req.runId} is already running on this stream`));
    if (runs.size >= MAX_RUNS_PER_STREAM) return fail(new ReprError(Code.RESOURCE_EXHAUSTED, `a stream may carry at most ${MAX_RUNS_PER_STREAM} runs at once`));
    // Whose turn the run takes in the scheduler's line.
    let owner: string;
    try {
      owner = requireCaller(metadata).owner;
      checkRunRequest(req);
      this.o.instances.check(req.instanceName);
    } catch (e) {
      return fail(e);
    }
    const abort = new AbortController();
    const queries = new PendingQueries((queryId, path, list) => send({ query: { runId: req.runId, queryId, path, list } }), abort.signal, 'client: ');
    const run: ActiveRun = { abort, queries };
    runs.set(req.runId, run);
    const log = this.o.log.child({ run: req.runId });
    const clock = this.o.clock ?? systemClock;
    const queuedAt = clock.now();
    let queueUs = 0;
    let answered = false;
    /** The executor (here or a worker's) times only what it did; the wait for it is known here. */
    const complete = (f: RunFinished) => {
      f.runId = req.runId;
      if (f.stats) f.stats.queueUs = queueUs;
      return f;
    };
    const host: RunHost = {
      query: (path, list) => queries.ask(path, list),
      output: (stream, data) => send({ output: { runId: req.runId, stream, data } }),
      // The client writes the changes back while the executor tidies up; the executor stays held until it has.
      answered: (f) => {
        answered = true;
        finish(complete({ ...f }));
      },
    };
    try {
      log.debug({ argv: req.arguments }, 'run waiting for an executor');
      const held = await this.o.scheduler.acquire(runRequirements(req), `runs/${req.runId}`, owner, run.abort.signal);
      queueUs = (clock.now() - queuedAt) * 1000;
      let result: RunFinished;
      try {
        send({ started: { runId: req.runId, executor: held.slot.id } });
        log.info({ executor: held.slot.id, argv: req.arguments }, 'run started');
        result = await held.slot.run(req, host, run.abort.signal);
      } finally {
        held.release();
      }
      complete(result);
      this.o.telemetry?.record({
        runId: req.runId,
        executor: held.slot.id,
        argv: req.arguments,
        exitCode: result.exitCode,
        status: result.status?.code ?? Code.OK,
        queries: result.stats?.queries ?? 0,
        mappedHits: result.stats?.mappedHits ?? 0,
        bytesFetched: result.stats?.bytesFetched ?? 0,
        bytesUploaded: result.stats?.bytesUploaded ?? 0,
        blockedOnClientMs: (result.stats?.blockedOnClientUs ?? 0) / 1000,
        queueMs: queueUs / 1000,
        setupMs: (result.stats?.setupUs ?? 0) / 1000,
        runMs: (result.stats?.runUs ?? 0) / 1000,
        top: result.stats?.top ?? [],
      });
      if (!answered) finish(result);
    } catch (e) {
      if (answered) log.warn({ err: e }, 'run failed after its answer was sent');
      else if (e instanceof ExecutorLostError) fail(new ReprError(Code.UNAVAILABLE, `${e.message}; the command may have partly run, nothing was written back`));
      else fail(e);
    } finally {
      runs.delete(req.runId);
      queries.rejectAll('run ended');
    }
  }

  handlers(): RunnerServer {
    return { session: (call) => this.session(call) };
  }

  static readonly definition = RunnerService;
}
