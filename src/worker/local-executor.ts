import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import { type Clock, systemClock } from '../common/clock.js';
import { fromWire, toWire } from '../common/digest.js';
import { Code, invalidArgument } from '../common/errors.js';
import type { Command, ExecuteResponse, ExecutedActionMetadata } from '../proto/build/bazel/remote/execution/v2/remote_execution.js';
import { toMillis, toTimestamp } from '../common/time.js';
import { type InputLimits, InputRootBuilder } from './input-root.js';
import { collectOutputs, uploadFile } from './outputs.js';
import { resolveInRoot } from './root-paths.js';
import { assertRelativePath } from '../reapi/paths.js';
import type { ExecutionTask } from '../executor/execution-task.js';
import { endSpan, inSpan, startSpan } from '../common/tracing.js';
import { type CommandExecutorOptions, commandOutcome, prepareCommand, removeScratchDir, scratchDirPath } from './command-core.js';

export interface LocalExecutorOptions extends CommandExecutorOptions {
  /** Bounds on an input root; defaults to DEFAULT_INPUT_LIMITS. */
  inputLimits?: InputLimits;
}

const ts = toTimestamp;

const STATUS_OK = { code: Code.OK, message: '', details: [] };

/** A response without a result: the action never got to run to its end. */
function unfinished(code: Code, message: string): ExecuteResponse {
  return { result: undefined, cachedResult: false, status: { code, message, details: [] }, serverLogs: {}, message };
}

/**
 * Executes actions on this machine: stages the input root from the CAS by
 * hard links, runs the command in the sandbox, uploads outputs and logs, and
 * reports an ExecuteResponse. Errors of the action itself (a non-zero exit, a
 * timeout) are results, not exceptions; an exception means the executor
 * could not do its job (and the scheduler decides what to tell the client).
 */
export class LocalExecutor {
  private readonly clock: Clock;

  constructor(private readonly o: LocalExecutorOptions) {
    this.clock = o.clock ?? systemClock;
  }

  get id(): string {
    return this.o.id;
  }

  async execute(task: ExecutionTask, signal?: AbortSignal): Promise<ExecuteResponse> {
    const { fn, action, command } = task;
    const cas = this.o.cas(task.instanceName);
    const now = () => ts(new Date(this.clock.now()));
    const meta: ExecutedActionMetadata = {
      worker: this.o.id,
      queuedTimestamp: ts(task.queuedAt),
      workerStartTimestamp: now(),
      auxiliaryMetadata: [],
    } as unknown as ExecutedActionMetadata;
    const dir = scratchDirPath(this.o.workDir, 'action-', this.clock);
    const root = path.join(dir, 'root');
    const prepared = prepareCommand(
      { timeoutMs: toMillis(action.timeout), environmentVariables: command.environmentVariables, requirements: task.requirements },
      this.o,
    );
    const { timeoutMs } = prepared;
    // The timeout covers staging too: a huge input root must not hold an executor past it.
    const started = performance.now();
    const deadline = AbortSignal.timeout(timeoutMs);
    try {
      meta.inputFetchStartTimestamp = now();
      const fetching = startSpan('fetch inputs', task.trace, { 'repr.executor': this.o.id });
      let wd: string;
      try {
        await mkdir(dir, { recursive: true });
        const staging = signal ? AbortSignal.any([signal, deadline]) : deadline;
        await new InputRootBuilder(cas, path.join(this.o.workDir, 'cache'), this.o.inputLimits).build(
          fn,
          fromWire(fn, action.inputRootDigest, 'input_root_digest'),
          root,
          staging,
        );
        wd = await prepareWorkingDirectory(root, command);
        endSpan(fetching);
      } catch (e) {
        endSpan(fetching, e);
        if (deadline.aborted) return unfinished(Code.DEADLINE_EXCEEDED, `action timed out after ${timeoutMs} ms while its input root was being staged`);
        if (signal?.aborted) return unfinished(Code.CANCELLED, 'execution cancelled');
        throw e;
      }
      meta.inputFetchCompletedTimestamp = now();
      const remainingMs = Math.max(1, Math.round(timeoutMs - (performance.now() - started)));

      meta.executionStartTimestamp = now();
      const running = startSpan('run', task.trace, { 'repr.executor': this.o.id });
      const r = await this.o.sandbox
        .run(
          {
            argv: command.arguments,
            env: prepared.env,
            rootDir: root,
            workingDirectory: wd,
            stdoutPath: path.join(dir, 'stdout'),
            stderrPath: path.join(dir, 'stderr'),
            timeoutMs: remainingMs,
            limits: prepared.limits,
            network: prepared.network,
          },
          signal,
        )
        .catch((e: unknown) => {
          endSpan(running, e);
          throw e;
        });
      meta.executionCompletedTimestamp = now();
      meta.virtualExecutionDuration = { seconds: Math.floor(r.wallMs / 1000), nanos: Math.round((r.wallMs % 1000) * 1e6) };
      const outcome = commandOutcome(r, { kind: 'action', executorId: this.o.id, timeoutMs, cancelled: signal?.aborted ?? false, limits: prepared.limits });
      running?.setAttributes({ 'process.exit_code': r.exitCode, 'repr.end': outcome.end });
      endSpan(running, outcome.code === Code.OK ? undefined : outcome.message);

      meta.outputUploadStartTimestamp = now();
      const { outputs, stdout, stderr } = await inSpan(
        'upload outputs',
        task.trace,
        async () => ({
          // Nothing is collected from an action stopped part-way (its outputs may be partial or over a cap).
          outputs: outcome.keepWrites ? await collectOutputs(cas, fn, command, root, wd) : undefined,
          stdout: await uploadFile(cas, fn, path.join(dir, 'stdout')),
          stderr: await uploadFile(cas, fn, path.join(dir, 'stderr')),
        }),
        { 'repr.executor': this.o.id },
      );
      meta.outputUploadCompletedTimestamp = now();
      meta.workerCompletedTimestamp = now();

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
      const status = outcome.code === Code.OK ? STATUS_OK : { code: outcome.code, message: outcome.message, details: [] };
      return { result, cachedResult: false, status, serverLogs: {}, message: outcome.message };
    } finally {
      // An action's mounts live in its sandbox's own namespace, never under its
      // directory here: reading the host's mount table per action is saved.
      await removeScratchDir(dir, this.o.log, { mayHoldMounts: false });
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
    throw invalidArgument(
      `working_directory "${command.workingDirectory}" is not a directory inside the input root${wd.kind === 'outside' ? `: ${wd.why}` : ''}`,
    );
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
