import { createHash } from 'node:crypto';
import { chmod, lstat, realpath, unlink } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { type Clock, systemClock } from '../common/clock.js';
import { type DigestFunction, SHA256 } from '../common/digest.js';
import { Code, failedPrecondition, invalidArgument, ReprError } from '../common/errors.js';
import { type DialTls, tlsFor } from '../grpc/dial.js';
import { OutputChunk_Stream } from '../proto/repr/run/v1/run.js';
import { ReapiClient } from '../reapi/reapi-client.js';
import { rootOf } from '../vfs/paths.js';
import { type DaemonReply, type DaemonRequest, type DaemonStatus, frameReader, MAX_REQUEST_BYTES, privateDir, writeFrame } from './daemon-protocol.js';
import type { Discovery } from './discovery.js';
import { RUN_FAILED_EXIT, runInterruptedExit, signalExit } from './exit-codes.js';
import { FileSource } from './file-source.js';
import { RunSession } from './run-client.js';
import { runRoots } from './run-command.js';
import { applyChanges } from './run-changes.js';
import { mappingsFor } from './run-record.js';
import { serverFailure } from './server-failure.js';

/** A run stopped because its caller was interrupted: what a shell reports for the signal it got (Ctrl-C unless it said SIGTERM). */
const interrupted = (abort: AbortController) => ({ exit: runInterruptedExit(abort.signal.reason === 'SIGTERM' ? 'SIGTERM' : 'SIGINT'), interrupted: true });

export interface RunDaemonOptions {
  socket: string;
  discovery: Discovery;
  cas?: string;
  instanceName: string;
  fn?: DigestFunction;
  token?: string;
  tls?: DialTls;
  /** With no client connected for this long, the daemon stops. */
  idleTimeoutMs: number;
  clock?: Clock;
  log: (msg: string) => void;
}

/** Output is forwarded in pieces this big at most, well under a reply frame's limit. */
const OUTPUT_PIECE = 256 * 1024;
/**
 * Records kept, oldest dropped first: a big build's commands each hold a few
 * hundred paths, and the daemon should not grow without bound over weeks.
 */
const MAX_RECORDS = 50_000;

interface Touched {
  accessed: string[];
  listed: string[];
}

/**
 * `repr daemon`: a resident client for one server spec. It keeps one
 * session stream per server, one FileSource (the hash cache and the set of
 * blobs already in the CAS) and the record of every command it ran, so a
 * command sent through it costs neither Node start-up nor a new stream, a
 * file read by many commands is uploaded once, and a command run again in an
 * unchanged tree is sent with every path it touched mapped: the server asks
 * nothing. Local clients (`repr exec`, `repr cc`) talk to it over a Unix
 * socket in a 0700 directory.
 */
export class RunDaemon {
  state: 'STARTING' | 'SERVING' | 'STOPPING' | 'STOPPED' = 'STARTING';
  private readonly server = net.createServer((c) => this.accept(c));
  private readonly fn: DigestFunction;
  private readonly clock: Clock;
  private cas?: ReapiClient;
  private files?: FileSource;
  private readonly sessions = new Map<string, RunSession>();
  private readonly records = new Map<string, Touched>();
  private readonly running = new Set<AbortController>();
  private readonly connections = new Set<net.Socket>();
  private cancelIdle: () => void = () => undefined;
  private next = 0;
  private socketIno = 0;
  private readonly counts = { runs: 0, failed: 0, queries: 0, mappedHits: 0, executors: {} as Record<string, number> };
  private readonly startedAt: number;
  private resolveStopped!: () => void;
  /** Resolves once the daemon has stopped (idle, `repr daemon stop`, or stop()). */
  readonly stopped = new Promise<void>((r) => (this.resolveStopped = r));

  constructor(private readonly o: RunDaemonOptions) {
    this.fn = o.fn ?? SHA256;
    this.clock = o.clock ?? systemClock;
    this.startedAt = this.clock.now();
  }

  /**
   * Binds the socket. Resolves false when another daemon already serves it
   * (two clients started one each at the same moment): this one is not needed.
   */
  async listen(): Promise<boolean> {
    try {
      await privateDir(path.dirname(this.o.socket));
    } catch (e) {
      throw failedPrecondition((e as Error).message);
    }
    const servers = await this.o.discovery.servers();
    const casTarget = this.o.cas ?? servers[0]!;
    this.cas = new ReapiClient({
      target: casTarget,
      instanceName: this.o.instanceName,
      digestFunction: this.fn,
      token: this.o.token,
      ...this.dialTls(casTarget),
    });
    this.files = new FileSource(this.cas, this.fn);
    if (!(await this.bind())) {
      this.cas.close();
      this.state = 'STOPPED';
      this.resolveStopped();
      return false;
    }
    await chmod(this.o.socket, 0o600);
    this.socketIno = (await lstat(this.o.socket)).ino;
    this.state = 'SERVING';
    this.armIdle();
    return true;
  }

  private async bind(): Promise<boolean> {
    for (let attempt = 0; ; attempt++) {
      try {
        await new Promise<void>((resolve, reject) => {
          this.server.once('error', reject);
          this.server.listen(this.o.socket, () => (this.server.off('error', reject), resolve()));
        });
        return true;
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'EADDRINUSE' || attempt > 0) throw e;
        if (await answers(this.o.socket)) return false;
        // Left by a daemon that was killed: nobody listens on it.
        await unlink(this.o.socket).catch(() => undefined);
      }
    }
  }

  private dialTls(target: string) {
    const tls = tlsFor(target, this.o.tls);
    return tls ? { tls } : {};
  }

  private armIdle(): void {
    this.cancelIdle();
    if (this.connections.size > 0 || this.state !== 'SERVING') return;
    this.cancelIdle = this.clock.setTimeout(() => {
      this.o.log(`idle for ${this.o.idleTimeoutMs / 1000} s: stopping`);
      void this.stop();
    }, this.o.idleTimeoutMs);
  }

  private accept(c: net.Socket): void {
    // STARTING is served too: once bound, clients of a parallel build dial in before listen() has finished.
    if (this.state === 'STOPPING' || this.state === 'STOPPED') {
      c.destroy();
      return;
    }
    this.connections.add(c);
    this.cancelIdle();
    const abort = new AbortController();
    let busy = false;
    const refuse = (why: string) => {
      writeFrame(c, { refused: why });
      c.end();
    };
    const read = frameReader<DaemonRequest>(
      MAX_REQUEST_BYTES,
      (req) => {
        if (req.op === 'cancel') abort.abort(req.signal === 'SIGTERM' ? 'SIGTERM' : 'SIGINT');
        else if (busy) refuse('one request per connection: open another for the next');
        else {
          busy = true;
          this.handle(req, c, abort).catch((e: unknown) => refuse((e as Error).message));
        }
      },
      (why) => refuse(why),
    );
    c.on('data', read);
    c.on('error', () => undefined);
    c.on('close', () => {
      // A client that went away (killed, Ctrl-C) wants nothing more: its run stops and nothing is written back.
      abort.abort();
      this.connections.delete(c);
      this.armIdle();
    });
  }

  private async handle(req: DaemonRequest, c: net.Socket, abort: AbortController): Promise<void> {
    if (req.op === 'status') {
      writeFrame(c, { status: this.status() });
      c.end();
    } else if (req.op === 'stop') {
      writeFrame(c, { stopped: true });
      c.end();
      this.o.log('asked to stop');
      await this.stop();
    } else if (req.op === 'exec') {
      const reply = await this.exec(req, c, abort);
      if (!c.destroyed) {
        writeFrame(c, reply);
        c.end();
      }
    } else {
      throw invalidArgument(`unknown request ${JSON.stringify((req as { op?: unknown }).op)}`);
    }
  }

  /** Local clients connected now: while any is, the daemon is not idle. */
  get clients(): number {
    return this.connections.size;
  }

  status(): DaemonStatus {
    return {
      pid: process.pid,
      servers: [...this.sessions.keys()],
      startedAt: this.startedAt,
      idleTimeoutMs: this.o.idleTimeoutMs,
      running: this.running.size,
      runs: this.counts.runs,
      failed: this.counts.failed,
      queries: this.counts.queries,
      mappedHits: this.counts.mappedHits,
      uploadedBlobs: this.files?.stats.uploadedBlobs ?? 0,
      uploadedBytes: this.files?.stats.uploadedBytes ?? 0,
      hashed: this.files?.stats.hashed ?? 0,
      records: this.records.size,
      executors: { ...this.counts.executors },
    };
  }

  /** The next server's session, round robin; a broken one is replaced. */
  private async session(): Promise<RunSession> {
    const servers = await this.o.discovery.servers();
    const target = servers[this.next++ % servers.length]!;
    let s = this.sessions.get(target);
    if (!s || s.failure) {
      void s?.close();
      s = new RunSession(target, this.files!, {
        instanceName: this.o.instanceName,
        fn: this.fn,
        token: this.o.token,
        clock: this.clock,
        ...this.dialTls(target),
      });
      this.sessions.set(target, s);
    }
    return s;
  }

  private async exec(req: Extract<DaemonRequest, { op: 'exec' }>, c: net.Socket, abort: AbortController): Promise<DaemonReply> {
    const check = validExec(req);
    if (check) return { exit: RUN_FAILED_EXIT, error: check };
    this.running.add(abort);
    this.counts.runs++;
    let target = this.o.cas ?? '';
    try {
      const cwd = await realpath(req.cwd);
      const roots = await runRoots(req.roots.length > 0 ? req.roots.map((r) => path.resolve(cwd, r)) : [cwd]);
      if (!rootOf(cwd, roots)) throw invalidArgument(`the working directory ${cwd} is not inside a root (${roots.join(', ')}); add --root`);
      const key = recordKey(req.argv, cwd, req.env, roots);
      const rec = this.records.get(key);
      const mappings = await mappingsFor([...roots, ...(rec?.accessed ?? [])], rec?.listed ?? [], this.files!, this.fn);
      const session = await this.session();
      target = session.target;
      if (abort.signal.aborted) return interrupted(abort);
      const finished = await session.run({
        argv: req.argv,
        env: req.env,
        cwd,
        roots,
        mappings,
        platform: req.platform,
        timeoutMs: req.timeoutMs,
        signal: abort.signal,
        onOutput: (stream, data) => {
          for (let i = 0; i < data.length; i += OUTPUT_PIECE)
            writeFrame(c, { out: stream === OutputChunk_Stream.STDERR ? 2 : 1, data: data.subarray(i, i + OUTPUT_PIECE).toString('base64') });
        },
        onStarted: (executor) => {
          this.counts.executors[executor] = (this.counts.executors[executor] ?? 0) + 1;
        },
      });
      this.counts.queries += finished.stats?.queries ?? 0;
      this.counts.mappedHits += finished.stats?.mappedHits ?? 0;
      // Interrupted: the build tool removes what it thinks its command
      // wrote; writing back now would put files behind its back.
      if (abort.signal.aborted) return interrupted(abort);
      if (finished.status && finished.status.code !== Code.OK) {
        this.counts.failed++;
        return { exit: RUN_FAILED_EXIT, error: `${Code[finished.status.code] ?? finished.status.code}: ${finished.status.message}` };
      }
      await applyChanges(finished.changes, roots, this.cas!, this.fn);
      this.remember(key, { accessed: finished.accessed, listed: finished.listed });
      return { exit: (finished.signal ? signalExit(finished.signal) : undefined) ?? finished.exitCode };
    } catch (e) {
      this.counts.failed++;
      if (abort.signal.aborted) return interrupted(abort);
      return { exit: RUN_FAILED_EXIT, error: e instanceof ReprError ? e.message : serverFailure(e, target, 'repr run') };
    } finally {
      this.running.delete(abort);
    }
  }

  private remember(key: string, t: Touched): void {
    this.records.delete(key);
    this.records.set(key, t);
    if (this.records.size > MAX_RECORDS) this.records.delete(this.records.keys().next().value!);
  }

  /** Stops runs in flight (nothing of theirs is written back), closes the streams and removes the socket. */
  async stop(): Promise<void> {
    if (this.state === 'STOPPING' || this.state === 'STOPPED') return this.stopped;
    this.state = 'STOPPING';
    this.cancelIdle();
    for (const a of this.running) a.abort();
    this.server.close();
    // Only our own socket: a daemon started after this one stopped answering may own the path now.
    const st = await lstat(this.o.socket).catch(() => undefined);
    if (st && st.ino === this.socketIno) await unlink(this.o.socket).catch(() => undefined);
    for (const c of this.connections) c.end();
    await Promise.all([...this.sessions.values()].map((s) => s.close()));
    this.cas?.close();
    this.state = 'STOPPED';
    this.resolveStopped();
  }
}

/** What a command is, for its record: the same argv in the same place with the same environment. */
function recordKey(argv: readonly string[], cwd: string, env: readonly { name: string; value: string }[], roots: readonly string[]): string {
  return createHash('sha256').update(JSON.stringify({ argv, cwd, env, roots })).digest('hex');
}

/** A request's shape, checked: it comes from any process of this user, not only repr's own client. */
function validExec(req: Extract<DaemonRequest, { op: 'exec' }>): string | undefined {
  const strings = (v: unknown) => Array.isArray(v) && v.every((x) => typeof x === 'string');
  const pairs = (v: unknown) => Array.isArray(v) && v.every((x) => x && typeof x.name === 'string' && typeof x.value === 'string');
  if (!strings(req.argv) || req.argv.length === 0) return 'exec needs argv: a non-empty list of strings';
  if (typeof req.cwd !== 'string' || !path.isAbsolute(req.cwd)) return 'exec needs cwd: an absolute path';
  if (!strings(req.roots)) return 'exec roots must be a list of strings';
  if (!pairs(req.env) || !pairs(req.platform)) return 'exec env and platform must be lists of {name, value}';
  if (typeof req.timeoutMs !== 'number' || !(req.timeoutMs >= 0)) return 'exec timeoutMs must be a non-negative number';
  return undefined;
}

/** Whether something listens on a Unix socket. */
function answers(socket: string): Promise<boolean> {
  return new Promise((resolve) => {
    const c = net.connect(socket);
    c.once('connect', () => (c.destroy(), resolve(true)));
    c.once('error', () => resolve(false));
  });
}
