import { type ChildProcess, spawn } from 'node:child_process';
import { closeSync, mkdirSync, openSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { type Clock, systemClock } from '../common/clock.js';
import type { Logger } from '../common/logger.js';
import type { PoolKey, ProvidedWorker, WorkerProvider } from './autoscale.js';

/** The `repr` launcher of this installation: dist/src/autoscale/ → bin/repr.js. */
const REPR_BIN = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..', 'bin', 'repr.js');

export interface ProcessProviderOptions {
  /** The pool's name; its workers are `<name>-<n>`. */
  name: string;
  /** grpc://host:port of this server, as the workers dial it. */
  scheduler: () => string;
  properties: Readonly<Record<string, readonly string[]>>;
  executors: number;
  /** More `repr worker` flags (a token, TLS files, --cpus…), passed as given. */
  workerArgs: readonly string[];
  /** Workers' data directories and log files go under here, one of each per worker. */
  dir: string;
  /** What a worker is given to finish its actions on SIGTERM (--drain-timeout); SIGKILL follows if it takes longer. */
  drainTimeoutMs: number;
  log: Logger;
  clock?: Clock;
}

interface Child {
  worker: ProvidedWorker;
  proc: ChildProcess;
  exited: Promise<void>;
}

/**
 * Workers as child processes of this server: an elastic pool on one big
 * machine. Each `repr worker` gets its own data directory and log file
 * (DIR/<name>/ and DIR/<name>.log). Stopping is SIGTERM, on which a worker
 * drains, then SIGKILL after the drain timeout. A worker that dies is
 * logged and forgotten, never restarted here: the controller sees the pool
 * shrink and decides.
 */
export class ProcessProvider implements WorkerProvider {
  readonly kind = 'process' as const;
  private readonly children = new Map<string, Child>();
  private next = 0;
  private readonly clock: Clock;

  constructor(private readonly o: ProcessProviderOptions) {
    this.clock = o.clock ?? systemClock;
  }

  async list(_pool: PoolKey): Promise<ProvidedWorker[]> {
    return [...this.children.values()].map((c) => c.worker);
  }

  async add(pool: PoolKey, count: number): Promise<ProvidedWorker[]> {
    const added: ProvidedWorker[] = [];
    for (let i = 0; i < count; i++) added.push(this.spawnOne(pool));
    return added;
  }

  private spawnOne(pool: PoolKey): ProvidedWorker {
    const name = `${this.o.name}-${this.next++}`;
    mkdirSync(this.o.dir, { recursive: true });
    const logFile = path.join(this.o.dir, `${name}.log`);
    const out = openSync(logFile, 'a');
    const args = [
      REPR_BIN,
      'worker',
      '--scheduler',
      this.o.scheduler(),
      '--name',
      name,
      '--data-dir',
      path.join(this.o.dir, name),
      '--executors',
      String(this.o.executors),
      '--drain-timeout',
      String(this.o.drainTimeoutMs / 1000),
      '--log-format',
      'json',
      ...Object.entries(this.o.properties).flatMap(([k, vs]) => vs.flatMap((v) => ['--executor-property', `${k}=${v}`])),
      ...this.o.workerArgs,
    ];
    let proc: ChildProcess;
    try {
      proc = spawn(process.execPath, args, { stdio: ['ignore', out, out] });
    } finally {
      // The child has its own descriptor now.
      closeSync(out);
    }
    const worker = { name, pool };
    const exited = new Promise<void>((resolve) => {
      proc.once('exit', (code, signal) => {
        if (this.children.get(name)?.proc === proc) {
          this.children.delete(name);
          this.o.log.warn({ worker: name, code, signal, log: logFile }, 'autoscaled worker process exited on its own');
        }
        resolve();
      });
      proc.once('error', (e) => {
        this.children.delete(name);
        this.o.log.error({ err: e, worker: name }, 'could not start an autoscaled worker process');
        resolve();
      });
    });
    this.children.set(name, { worker, proc, exited });
    this.o.log.info({ worker: name, pid: proc.pid, log: logFile }, 'started a worker process');
    return worker;
  }

  /** SIGTERM (the worker drains and exits), SIGKILL if it is still there after the drain timeout and some slack; resolves once all exited. */
  async remove(_pool: PoolKey, names: readonly string[]): Promise<void> {
    const missing = names.filter((n) => !this.children.has(n));
    // Someone else's process under the pool's prefix: out of rotation it stays, idle, until whoever started it stops it.
    if (missing.length > 0) this.o.log.warn({ workers: missing }, 'not worker processes this server started (or they exited already); cannot stop them');
    await Promise.all(names.flatMap((n) => (this.children.has(n) ? [this.stop(n)] : [])));
  }

  private async stop(name: string): Promise<void> {
    const c = this.children.get(name)!;
    this.children.delete(name);
    c.proc.kill('SIGTERM');
    // The worker's own drain timeout, plus time to close its stream and cache.
    const slackMs = 5000;
    let cancel = () => {};
    const killed = new Promise<boolean>((resolve) => {
      cancel = this.clock.setTimeout(() => resolve(true), this.o.drainTimeoutMs + slackMs);
    });
    const late = await Promise.race([c.exited.then(() => false), killed]);
    cancel();
    if (late) {
      this.o.log.warn({ worker: name, pid: c.proc.pid }, 'worker process did not exit after draining; killing it');
      c.proc.kill('SIGKILL');
      await c.exited;
    }
    this.o.log.info({ worker: name, code: c.proc.exitCode, signal: c.proc.signalCode }, 'worker process stopped');
  }

  /** Stops every worker it started: none outlives the server. */
  async close(): Promise<void> {
    await Promise.all([...this.children.keys()].map((n) => this.stop(n)));
  }
}
