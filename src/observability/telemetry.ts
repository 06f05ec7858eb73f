import { appendFile, mkdir } from 'node:fs/promises';
import path from 'node:path';
import { Counter, Histogram, type Registry } from 'prom-client';
import { Code, invalidArgument } from '../common/errors.js';
import type { Logger } from '../common/logger.js';
import type { TelemetrySinkConfig } from './telemetry-config.js';

/** What one `repr run` cost, reported once when the run ends. */
export interface RunRecord {
  runId: string;
  /** The executor (worker) that ran the command. */
  executor: string;
  argv: string[];
  exitCode: number;
  /** gRPC status code of the run as a whole (0 = OK, even when exitCode != 0). */
  status: number;
  /** FUSE requests the command made against the client's files. */
  queries: number;
  /** Of those, the ones answered from what the worker already had. */
  mappedHits: number;
  bytesFetched: number;
  bytesUploaded: number;
  /** Time the command spent waiting on the client (round trips through the mount). */
  blockedOnClientMs: number;
  /** Time the run waited for an executor, behind other runs and actions. */
  queueMs?: number;
  setupMs: number;
  runMs: number;
  /** The files that cost the most, most expensive first. */
  top: { path: string; micros: number; bytes: number }[];
}

/**
 * Where run records go. `record` is called on the run's own path, so it must
 * neither block nor throw: a sink that cannot deliver logs and drops.
 */
export interface TelemetrySink {
  record(r: RunRecord): void;
  /** Flushes what is buffered; the sink takes no records afterwards. */
  close?(): Promise<void>;
}

/** The name of a gRPC code ("DEADLINE_EXCEEDED"), bounded as a label value must be. */
export function statusName(code: number): string {
  return (Code as unknown as Record<number, string | undefined>)[code] ?? String(code);
}

/** One structured info line per run, for deployments that already collect logs. */
export class LogTelemetrySink implements TelemetrySink {
  constructor(private readonly log: Logger) {}

  record(r: RunRecord): void {
    this.log.info({ run: { ...r, statusName: statusName(r.status) } }, 'run finished');
  }
}

/** Lines waiting for the disk beyond this are dropped rather than held in memory without bound. */
const MAX_PENDING_LINES = 10_000;

/**
 * Appends one JSON object per run to a file (JSON Lines), for offline
 * analysis with jq or a notebook. Writes happen in the background, several
 * records per append when they come faster than the disk takes them.
 */
export class JsonlTelemetrySink implements TelemetrySink {
  private pending: string[] = [];
  private writing = false;
  private closed = false;
  private dropped = 0;
  private dirReady: Promise<unknown> | undefined;
  private readonly idle: (() => void)[] = [];

  constructor(
    readonly file: string,
    private readonly log: Logger,
    private readonly now: () => Date = () => new Date(),
  ) {}

  record(r: RunRecord): void {
    if (this.closed) {
      this.log.warn({ runId: r.runId, file: this.file }, 'telemetry record after close dropped');
      return;
    }
    if (this.pending.length >= MAX_PENDING_LINES) {
      this.dropped++;
      return;
    }
    try {
      this.pending.push(`${JSON.stringify({ time: this.now().toISOString(), ...r })}\n`);
    } catch (err) {
      this.log.warn({ err, runId: r.runId }, 'telemetry record cannot be serialized; dropped');
      return;
    }
    void this.pump();
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.writing) await new Promise<void>((resolve) => this.idle.push(resolve));
  }

  private async pump(): Promise<void> {
    if (this.writing) return;
    this.writing = true;
    try {
      while (this.pending.length > 0) {
        const lines = this.pending;
        this.pending = [];
        try {
          this.dirReady ??= mkdir(path.dirname(this.file), { recursive: true });
          await this.dirReady;
          await appendFile(this.file, lines.join(''));
        } catch (err) {
          // Try the directory again next time: it may have been removed.
          this.dirReady = undefined;
          this.log.warn({ err, file: this.file, lost: lines.length }, 'cannot write telemetry; records dropped');
        }
        if (this.dropped > 0) {
          this.log.warn({ file: this.file, lost: this.dropped }, 'telemetry backlog full; records dropped');
          this.dropped = 0;
        }
      }
    } finally {
      // No await between the loop's last check and here, so a record() cannot
      // slip in unseen: it either found `writing` false or was in `pending`.
      this.writing = false;
      for (const wake of this.idle.splice(0)) wake();
    }
  }
}

const seconds = (ms: number): number => Math.max(0, ms) / 1000;

/**
 * Prometheus metrics over all runs. Deliberately nothing per path or per
 * run: label values must come from a small set, or the time series (and the
 * server's memory) grow with every file anyone ever touched.
 */
export class PrometheusTelemetrySink implements TelemetrySink {
  private readonly runs: Counter<'status' | 'exit'>;
  private readonly queries: Counter;
  private readonly mappedHits: Counter;
  private readonly fetched: Counter;
  private readonly uploaded: Counter;
  private readonly blocked: Histogram;
  private readonly setup: Histogram;
  private readonly duration: Histogram;

  constructor(registry: Registry) {
    const registers = [registry];
    this.runs = new Counter({ name: 'repr_run_total', help: 'Runs finished, by gRPC status and exit code.', labelNames: ['status', 'exit'], registers });
    this.queries = new Counter({ name: 'repr_run_queries_total', help: 'Filesystem requests runs made against their clients.', registers });
    this.mappedHits = new Counter({ name: 'repr_run_mapped_hits_total', help: 'Filesystem requests answered without asking the client.', registers });
    this.fetched = new Counter({ name: 'repr_run_fetched_bytes_total', help: 'Bytes runs fetched from their clients.', registers });
    this.uploaded = new Counter({ name: 'repr_run_uploaded_bytes_total', help: 'Bytes runs uploaded back to their clients.', registers });
    // 1 ms .. ~70 min by doubling: runs range from `true` to long test suites.
    const buckets = Array.from({ length: 23 }, (_, i) => 0.001 * 2 ** i);
    this.blocked = new Histogram({ name: 'repr_run_blocked_on_client_seconds', help: 'Time a run waited on its client.', buckets, registers });
    this.setup = new Histogram({ name: 'repr_run_setup_seconds', help: 'Time from request to the command starting.', buckets, registers });
    this.duration = new Histogram({ name: 'repr_run_duration_seconds', help: 'Time the command ran.', buckets, registers });
  }

  record(r: RunRecord): void {
    this.runs.inc({ status: statusName(r.status), exit: String(r.exitCode) });
    this.queries.inc(Math.max(0, r.queries));
    this.mappedHits.inc(Math.max(0, r.mappedHits));
    this.fetched.inc(Math.max(0, r.bytesFetched));
    this.uploaded.inc(Math.max(0, r.bytesUploaded));
    this.blocked.observe(seconds(r.blockedOnClientMs));
    this.setup.observe(seconds(r.setupMs));
    this.duration.observe(seconds(r.runMs));
  }
}

/** Several sinks as one; a sink that throws anyway does not keep the others from their record. */
export class FanoutTelemetrySink implements TelemetrySink {
  constructor(
    readonly sinks: readonly TelemetrySink[],
    private readonly log: Logger,
  ) {}

  record(r: RunRecord): void {
    for (const s of this.sinks) {
      try {
        s.record(r);
      } catch (err) {
        this.log.warn({ err, sink: s.constructor.name, runId: r.runId }, 'telemetry sink failed');
      }
    }
  }

  async close(): Promise<void> {
    await Promise.allSettled(this.sinks.map((s) => s.close?.()));
  }
}

export { telemetrySinkSchema, type TelemetrySinkConfig } from './telemetry-config.js';

export interface TelemetryDeps {
  log: Logger;
  /** Needed by a `prometheus` sink: the registry the metrics endpoint serves. */
  registry?: Registry;
}

/** Builds the configured sinks as one; no sinks at all is a sink that drops everything. */
export function createTelemetrySinks(configs: readonly TelemetrySinkConfig[], deps: TelemetryDeps): TelemetrySink {
  const log = deps.log.child({ svc: 'telemetry' });
  const types = configs.map((c) => c.type);
  if (types.filter((t) => t === 'prometheus').length > 1) {
    // Both would count every run on the same series.
    throw invalidArgument('invalid configuration: telemetry: at most one sink of type "prometheus"');
  }
  const sinks = configs.map((c): TelemetrySink => {
    switch (c.type) {
      case 'log':
        return new LogTelemetrySink(log);
      case 'jsonl':
        return new JsonlTelemetrySink(c.path, log);
      case 'prometheus':
        if (!deps.registry) throw invalidArgument('invalid configuration: telemetry: a "prometheus" sink needs a metrics registry (set metricsListen)');
        return new PrometheusTelemetrySink(deps.registry);
      default:
        throw invalidArgument(`invalid configuration: telemetry: unknown sink type "${(c as { type: string }).type}"`);
    }
  });
  return sinks.length === 1 ? sinks[0]! : new FanoutTelemetrySink(sinks, log);
}
