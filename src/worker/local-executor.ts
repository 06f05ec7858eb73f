import { mkdir, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { type Digest, type DigestFunction, fromWire, toWire } from '../common/digest.js';
import { Code, invalidArgument } from '../common/errors.js';
import type { Logger } from '../common/logger.js';
import type { BlobStore } from '../storage/blob-store.js';
import type { Sandbox } from '../sandbox/sandbox.js';
import { type Requirement, sandboxSettings } from '../executor/platform.js';
import type { Action, Command, ExecuteResponse, ExecutedActionMetadata } from '../proto/build/bazel/remote/execution/v2/remote_execution.js';
import { toMillis, toTimestamp } from '../common/time.js';
import { type InputLimits, InputRootBuilder } from './input-root.js';
import { collectOutputs, uploadFile } from './outputs.js';
import { resolveInRoot } from './root-paths.js';
import { assertRelativePath } from '../reapi/paths.js';
import { ExecutionTask } from '../executor/execution-task.js';


export interface LocalExecutorOptions {
  id: string;
  /** The CAS to stage inputs from and upload outputs to, per instance name. */
  cas: (instanceName: string) => BlobStore;
  sandbox: Sandbox;
  /** Scratch space: one directory per running action, removed afterwards. */
  workDir: string;
  log: Logger;
  /** Used when the action sets no timeout. */
  defaultTimeoutMs: number;
  /** Upper bound on any action's timeout. */
  maxTimeoutMs: number;
  /** Bounds on an input root; defaults to DEFAULT_INPUT_LIMITS. */
  inputLimits?: InputLimits;
}

const ts = toTimestamp;

const STATUS_OK = { code: Code.OK, message: '', details: [] };

/**
 * Runs actions on this machine: stages the input root from the CAS by hard
 * links, runs the command in the sandbox, uploads outputs and logs, and
 * reports an ExecuteResponse. Errors of the action itself (a non-zero exit, a
 * timeout) are results, not exceptions; an exception means the executor
 * could not do its job (and the scheduler decides what to tell the client).
 */
export class LocalExecutor {
  constructor(private readonly o: LocalExecutorOptions) {}

  get id(): string {
    return this.o.id;
  }

  async execute(task: ExecutionTask, signal?: AbortSignal): Promise<ExecuteResponse> {
    const { fn, action, command } = task;
    const cas = this.o.cas(task.instanceName);
    const meta: ExecutedActionMetadata = {
      worker: this.o.id,
      queuedTimestamp: ts(task.queuedAt),
      workerStartTimestamp: ts(new Date()),
      auxiliaryMetadata: [],
    } as unknown as ExecutedActionMetadata;
    const dir = path.join(this.o.workDir, `${Date.now().toString(36)}-${randomBytes(4).toString('hex')}`);
    const root = path.join(dir, 'root');
    // The timeout covers staging too: a huge input root must not hold an executor past it.
    const timeoutMs = effectiveTimeoutMs(toMillis(action.timeout), this.o.defaultTimeoutMs, this.o.maxTimeoutMs);
    const started = performance.now();
    const deadline = AbortSignal.timeout(timeoutMs);
    try {
      meta.inputFetchStartTimestamp = ts(new Date());
      await mkdir(dir, { recursive: true });
      let wd: string;
      try {
        const staging = signal ? AbortSignal.any([signal, deadline]) : deadline;
        await new InputRootBuilder(cas, path.join(this.o.workDir, 'cache'), this.o.inputLimits).build(fn, fromWire(fn, action.inputRootDigest, 'input_root_digest'), root, staging);
        wd = await prepareWorkingDirectory(root, command);
      } catch (e) {
        if (deadline.aborted) {
          const message = `action timed out after ${timeoutMs} ms while its input root was being staged`;
          return { result: undefined, cachedResult: false, status: { code: Code.DEADLINE_EXCEEDED, message, details: [] }, serverLogs: {}, message };
        }
        if (signal?.aborted) return { result: undefined, cachedResult: false, status: { code: Code.CANCELLED, message: 'execution cancelled', details: [] }, serverLogs: {}, message: 'execution cancelled' };
        throw e;
      }
      meta.inputFetchCompletedTimestamp = ts(new Date());
      const remainingMs = Math.max(1, Math.round(timeoutMs - (performance.now() - started)));

      const { limits, network } = sandboxSettings(task.requirements);
      const env: Record<string, string> = {};
      for (const v of command.environmentVariables) env[v.name] = v.value;
      env.PATH ??= '/usr/local/bin:/usr/bin:/bin';
      meta.executionStartTimestamp = ts(new Date());
      const r = await this.o.sandbox.run(
        {
          argv: command.arguments,
          env,
          rootDir: root,
          workingDirectory: wd,
          stdoutPath: path.join(dir, 'stdout'),
          stderrPath: path.join(dir, 'stderr'),
          timeoutMs: remainingMs,
          limits,
          network,
        },
        signal,
      );
      meta.executionCompletedTimestamp = ts(new Date());
      meta.virtualExecutionDuration = { seconds: Math.floor(r.wallMs / 1000), nanos: Math.round((r.wallMs % 1000) * 1e6) };

      meta.outputUploadStartTimestamp = ts(new Date());
      // Nothing is collected from an action stopped part-way (its outputs may be partial or over a cap).
      const outputs = r.timedOut || r.limitExceeded ? undefined : await collectOutputs(cas, fn, command, root, wd);
      const stdout = await uploadFile(cas, fn, path.join(dir, 'stdout'));
      const stderr = await uploadFile(cas, fn, path.join(dir, 'stderr'));
      meta.outputUploadCompletedTimestamp = ts(new Date());
      meta.workerCompletedTimestamp = ts(new Date());

      const result = {
        outputFiles: outputs?.outputFiles ?? [],
        outputFileSymlinks: outputs?.outputFileSymlinks ?? [],
        outputSymlinks: outputs?.outputSymlinks ?? [],
        outputDirectories: outputs?.outputDirectories ?? [],
        outputDirectorySymlinks: outputs?.outputDirectorySymlinks ?? [],
        exitCode: r.exitCode,
        stdoutRaw: Buffer.alloc(0),
        stdoutDigest: toWire(stdout.digest),
        stderrRaw: Buffer.alloc(0),
        stderrDigest: toWire(stderr.digest),
        executionMetadata: meta,
      };
      let message = '';
      let status = STATUS_OK;
      if (r.timedOut) {
        message = `action timed out after ${timeoutMs} ms; its process tree was killed`;
        status = { code: Code.DEADLINE_EXCEEDED, message, details: [] };
      } else if (signal?.aborted) {
        message = 'execution cancelled';
        status = { code: Code.CANCELLED, message, details: [] };
      } else if (r.limitExceeded) {
        // FAILED_PRECONDITION, as for an input root over the limits: a cap of
        // this executor that the action broke, which a retry would break
        // again (clients retry RESOURCE_EXHAUSTED). Never cached.
        message = `${r.limitExceeded.message} on ${this.o.id}`;
        status = { code: Code.FAILED_PRECONDITION, message, details: [] };
      } else if (r.oomKilled) {
        message = `action exceeded its memory limit (${r.memoryLimitBytes ?? limits.memoryBytes ?? 'default'} bytes) and was killed (exit code ${r.exitCode})`;
      } else if (r.exitCode !== 0) {
        message = `action exited with code ${r.exitCode}${r.signal ? ` (killed by ${r.signal})` : ''} on ${this.o.id}`;
      }
      return { result, cachedResult: false, status, serverLogs: {}, message };
    } finally {
      await rm(dir, { recursive: true, force: true }).catch((e: unknown) => this.o.log.warn({ err: e, dir }, 'could not remove work directory'));
    }
  }
}

/**
 * Resolves the working directory inside the root and creates it and the
 * parents of declared outputs (REAPI: they exist before the action runs), never
 * through a symlink that leads out of the root: the executor runs as root, and
 * an input symlink `t -> /tmp` with an output `t/X/x` must not make it create
 * /tmp/X on the host. Returns the working directory's physical path relative
 * to the root.
 */
async function prepareWorkingDirectory(root: string, command: Command): Promise<string> {
  const wanted = assertRelativePath(command.workingDirectory, 'working_directory');
  const wd = await resolveInRoot(root, wanted, { followLast: true, create: true });
  if (wd.kind !== 'inside') {
    throw invalidArgument(`working_directory "${command.workingDirectory}" is not a directory inside the input root${wd.kind === 'outside' ? `: ${wd.why}` : ''}`);
  }
  const dirs = [
    ...[...command.outputPaths, ...command.outputFiles, ...command.outputDirectories].map((p) => path.posix.dirname(assertRelativePath(p, 'output path'))),
    ...command.outputDirectories.map((p) => assertRelativePath(p, 'output directory')),
  ];
  for (const d of new Set(dirs)) {
    // One that leads outside is left alone: the action may write through it
    // inside its sandbox, and collection will not follow it.
    await resolveInRoot(root, path.posix.join(wd.rel, d), { followLast: true, create: true });
  }
  return wd.rel;
}

/**
 * The timeout an action gets: its own when positive, else the default, and
 * never more than the maximum. A zero or negative request can never mean
 * "no timeout" (Execute refuses negative ones; this guards every other path).
 */
export function effectiveTimeoutMs(requestedMs: number, defaultMs: number, maxMs: number): number {
  const wanted = Number.isFinite(requestedMs) && requestedMs > 0 ? requestedMs : defaultMs;
  return Math.max(1, Math.min(maxMs, wanted));
}

export function defaultExecutorId(i: number): string {
  return `${os.hostname()}/local-${i}`;
}
