import { lstat } from 'node:fs/promises';
import path from 'node:path';
import { type Clock, systemClock } from '../common/clock.js';
import type { DigestFunction } from '../common/digest.js';
import { Code, codeOf, ReprError, toStatus } from '../common/errors.js';
import { OutputChunk_Stream, type Node, type RunFinished, type RunRequest, type RunStats } from '../proto/repr/run/v1/run.js';
import type { BlobStore } from '../storage/blob-store.js';
import type { SandboxResult } from '../sandbox/sandbox.js';
import { uploadFile } from './outputs.js';
import { nodeToWire } from '../vfs/nodes.js';
import type { VChange, VNode, VPathNode } from '../vfs/vfs.js';
import { checkRunRequest } from '../executor/run-request.js';
import { type RunHost, runRequirements } from '../executor/run-host.js';
import {
  type CommandExecutorOptions,
  commandOutcome,
  type PreparedCommand,
  prepareCommand,
  removeScratchDir,
  runTimedOutMessage,
  sandboxUser,
  scratchDirPath,
} from './command-core.js';
import { RunDeadline } from './run-deadline.js';
import { makeRunDir, type OverlaySupport, type RunDir, type RunDirsAhead, removeRunDir } from './run-dir.js';
import { RunInputs } from './run-inputs.js';

export type { OverlaySupport } from './run-dir.js';

/** As for actions; workDir gets one directory per run (mountpoint, copy-up files), removed afterwards. */
export interface RunExecutorOptions extends CommandExecutorOptions {
  /**
   * Where the command's writes go: `overlay` (default: an overlayfs upper
   * layer on the worker's disk, falling back to FUSE where it cannot be
   * mounted) or `fuse` (copy-on-write inside the FUSE mount).
   */
  writes?: 'overlay' | 'fuse';
  /**
   * Shared by the run executors of one machine, so that after one failed
   * overlay mount none of them tries again on every run. Default: this
   * executor's own.
   */
  overlaySupport?: OverlaySupport;
  /** Run directories made ahead, shared by the run executors of a machine; without it each run makes its own. */
  ahead?: RunDirsAhead;
}

const TOP_FILES = 10;
/** How long a run may stay busy past its deadline before its FUSE connection is aborted. */
const FORCE_AFTER_MS = 2000;

/** One run being carried out: what its steps share. */
interface RunState {
  req: RunRequest;
  host: RunHost;
  roots: string[];
  mappings: VPathNode[];
  fn: DigestFunction;
  cas: BlobStore;
  command: PreparedCommand;
  dir: string;
  mnt: string;
  /** When the run started (performance.now()): its deadline covers setup too. */
  t0: number;
  deadline: RunDeadline;
  inputs: RunInputs;
  stats: RunStats;
  /** Its directory once mounted, or from the start when it took one made ahead. */
  rd?: RunDir;
}

/** What a run's result carries whatever became of its command. */
type RunBase = Pick<RunFinished, 'runId' | 'accessed' | 'listed' | 'stats'>;

/**
 * Carries out one `repr run` on this machine: mounts the client's roots
 * through FUSE (asking the client for what the mappings do not cover), runs
 * the command in the sandbox with its output streamed back, and stores what
 * the command changed in the CAS for the client to apply. The host hears the
 * answer first; the mount and the scratch space are gone when run() returns,
 * whatever happened.
 */
export class RunExecutor {
  private readonly clock: Clock;
  private readonly overlaySupport: OverlaySupport;

  constructor(private readonly o: RunExecutorOptions) {
    this.clock = o.clock ?? systemClock;
    this.overlaySupport = o.overlaySupport ?? { unavailable: false };
  }

  get id(): string {
    return this.o.id;
  }

  async run(req: RunRequest, host: RunHost, signal: AbortSignal): Promise<RunFinished> {
    const t0 = performance.now();
    let s: RunState;
    try {
      s = this.begin(req, host, signal, t0);
    } catch (e) {
      // An answer, not an exception: a worker's scheduler waits for one.
      return this.failed(req, e, signal);
    }
    let answer: RunFinished;
    try {
      s.inputs.prefetch();
      const view = await this.mountView(s);
      await this.checkRoots(s, view);
      const r = await this.runCommand(s, view);
      answer = await this.finish(s, r);
    } catch (e) {
      if (s.deadline.timedOut && !signal.aborted) answer = this.timedOut(s, { runId: req.runId, accessed: [], listed: [], stats: s.stats });
      else answer = this.failed(req, e, signal, s.stats);
    }
    // The command and all it started are gone and its changes are in the
    // CAS: nothing the client does with the answer depends on the unmounting.
    try {
      host.answered?.(answer);
    } finally {
      await this.cleanUp(s);
    }
    return answer;
  }

  /** Checks the request and sets the run up; its deadline runs from here. */
  private begin(req: RunRequest, host: RunHost, signal: AbortSignal, t0: number): RunState {
    const { roots, fn, mappings } = checkRunRequest(req);
    const cas = this.o.cas(req.instanceName);
    const command = prepareCommand({ timeoutMs: req.timeoutMs, environmentVariables: req.environmentVariables, requirements: runRequirements(req) }, this.o);
    const taken = this.o.ahead?.take();
    const dir = taken?.dir ?? scratchDirPath(this.o.workDir, 'run-', this.clock);
    const mnt = path.join(dir, 'mnt');
    const stats: RunStats = { queries: 0, mappedHits: 0, bytesFetched: 0, blockedOnClientUs: 0, setupUs: 0, runUs: 0, top: [], bytesUploaded: 0, queueUs: 0 };
    const deadline = new RunDeadline(signal, {
      timeoutMs: command.timeoutMs,
      clock: this.clock,
      backstopAfterMs: FORCE_AFTER_MS,
      backstop: () => {
        this.o.log.warn({ run: req.runId, mnt }, 'run still busy past its deadline; aborting its FUSE connection');
        void s.rd?.overlay?.unmount();
        void s.rd?.mount.abort();
      },
    });
    const inputs = new RunInputs({ cas, fn, host, deadline, mappings, fetchedDir: path.join(dir, 'fetched'), log: this.o.log, stats });
    const s: RunState = { req, host, roots, mappings, fn, cas, command, dir, mnt, ...(taken ? { rd: taken } : {}), t0, deadline, inputs, stats };
    return s;
  }

  /** Mounts the client's roots (in the directory made ahead, if the run took one) and returns the directory the command's roots are bound from. */
  private async mountView(s: RunState): Promise<string> {
    s.rd ??= await makeRunDir(
      {
        workDir: this.o.workDir,
        clock: this.clock,
        log: this.o.log,
        ...sandboxUser(this.o),
        writes: this.o.writes ?? 'overlay',
        overlaySupport: this.overlaySupport,
      },
      s.dir,
    );
    s.rd.mount.configure({ roots: s.roots, mappings: s.mappings, query: s.inputs.query, fetch: s.inputs.fetch });
    return s.rd.overlay?.merged ?? s.mnt;
  }

  /**
   * bwrap resolves the roots as root on the worker: a root the client calls a
   * symlink would be followed to the worker's own files.
   */
  private async checkRoots(s: RunState, view: string): Promise<void> {
    for (const root of s.roots) {
      const st = await s.deadline.until(lstat(path.join(view, root))).catch((e: unknown) => {
        if (s.deadline.signal.aborted) throw e;
        return undefined;
      });
      if (!st?.isDirectory()) throw new ReprError(Code.FAILED_PRECONDITION, `root ${root} is not a directory on the client`);
    }
  }

  private async runCommand(s: RunState, view: string): Promise<SandboxResult> {
    s.deadline.throwIfOver();
    const started = performance.now();
    s.stats.setupUs = Math.round((started - s.t0) * 1000);
    const r = await this.o.sandbox.run(
      {
        argv: s.req.arguments,
        env: s.command.env,
        binds: s.roots.map((root) => ({ host: path.join(view, root), path: root })),
        // The command's writes land in the overlay's upper layer, owned by
        // the sandbox user, where the write caps can count them. FUSE
        // copy-on-write stores them as root in the helper's scratch space:
        // not counted (a known gap of that fallback mode).
        writableDirs: s.rd?.overlay ? [s.rd.overlay.upper] : [],
        workingDirectory: s.req.workingDirectory,
        onOutput: (stream, chunk) => s.host.output(stream === 'stdout' ? OutputChunk_Stream.STDOUT : OutputChunk_Stream.STDERR, chunk),
        // The sandbox keeps its own timer as well, in case the deadline's is late.
        timeoutMs: Math.max(1, s.command.timeoutMs - (started - s.t0)),
        limits: s.command.limits,
        network: s.command.network,
      },
      s.deadline.signal,
    );
    s.stats.runUs = Math.round((performance.now() - started) * 1000);
    return r;
  }

  /** The run's answer from its command's end; what the command changed is stored only when it may be kept. */
  private async finish(s: RunState, r: SandboxResult): Promise<RunFinished> {
    const report = await s.rd!.mount.report().catch(() => ({ accessed: [], listed: [], mappedHits: 0, queries: 0 }));
    s.stats.mappedHits = report.mappedHits;
    s.stats.top = s.inputs.costliest(TOP_FILES);
    const base: RunBase = { runId: s.req.runId, accessed: report.accessed, listed: report.listed, stats: s.stats };
    const outcome = commandOutcome(r, {
      kind: 'run',
      executorId: this.o.id,
      timeoutMs: s.command.timeoutMs,
      cancelled: s.deadline.cancelled,
      timedOut: s.deadline.timedOut,
      limits: s.command.limits,
    });
    const ended = { ...base, exitCode: r.exitCode, signal: r.signal ?? '' };
    if (!outcome.keepWrites) return { ...ended, status: { code: outcome.code, message: outcome.message, details: [] }, changes: [] };
    // The client shows an OK status's message nowhere; its stderr is where the user looks.
    if (outcome.end === 'out-of-memory') s.host.output(OutputChunk_Stream.STDERR, Buffer.from(`repr run: ${outcome.message}\n`));
    const changes = await this.storeChanges(s, report.listed);
    // Reading the changes back is under the deadline too.
    if (s.deadline.timedOut) return this.timedOut(s, base, r.exitCode, r.signal ?? '');
    return { ...ended, status: outcome.message ? { code: Code.OK, message: outcome.message, details: [] } : undefined, changes };
  }

  /** What the command changed under the roots, as the client gets it; new content goes to the CAS first. */
  private async storeChanges(s: RunState, listed: readonly string[]): Promise<RunFinished['changes']> {
    const changes = s.rd!.overlay ? await s.rd!.overlay.changes(s.roots, new Set(listed)) : await s.rd!.mount.changes();
    const wire: RunFinished['changes'] = [];
    for (const c of changes) wire.push({ path: c.path, node: await this.store(s.cas, s.fn, c, s.stats) });
    return wire;
  }

  private timedOut(s: RunState, base: RunBase, exitCode = -1, sig = ''): RunFinished {
    return {
      ...base,
      status: { code: Code.DEADLINE_EXCEEDED, message: runTimedOutMessage(s.command.timeoutMs), details: [] },
      exitCode,
      signal: sig,
      changes: [],
    };
  }

  /**
   * Unmounts and removes the run's directory, then has the next one made
   * ahead: by the helper process this run's mount gave back.
   */
  private async cleanUp(s: RunState): Promise<void> {
    s.deadline.dispose();
    if (s.rd) await removeRunDir(s.rd, this.o.log);
    else await removeScratchDir(s.dir, this.o.log, { mayHoldMounts: true });
    this.o.ahead?.refill();
  }

  /** A run that could not be carried out, with the error's code (INTERNAL for an unexpected one). */
  private failed(req: RunRequest, e: unknown, signal: AbortSignal, stats?: RunStats): RunFinished {
    const code = codeOf(e);
    if (code === Code.UNKNOWN || code === Code.OK || code === Code.INTERNAL) this.o.log.error({ err: e, run: req.runId }, 'run failed');
    const status = toStatus(e, this.o.id);
    return {
      runId: req.runId,
      status: signal.aborted ? { ...status, code: Code.CANCELLED } : status,
      exitCode: -1,
      signal: '',
      changes: [],
      accessed: [],
      listed: [],
      stats,
    };
  }

  /** A change as the client gets it; new content goes to the CAS first. */
  private async store(cas: BlobStore, fn: DigestFunction, c: VChange, stats: RunStats): Promise<Node> {
    const v: VNode = { kind: c.kind };
    if (c.kind === 'file') {
      if (c.file) {
        const { digest, uploaded } = await uploadFile(cas, fn, c.file);
        stats.bytesUploaded += uploaded;
        v.hash = digest.hash;
        v.size = digest.sizeBytes;
      } else {
        v.hash = c.hash;
        v.size = c.size;
      }
      v.mode = c.mode ?? 0o644;
    } else if (c.kind === 'symlink') {
      v.target = c.target;
    }
    return nodeToWire(v, fn);
  }
}
