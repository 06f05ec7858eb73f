import { randomBytes } from 'node:crypto';
import { rm } from 'node:fs/promises';
import path from 'node:path';
import type { Clock } from '../common/clock.js';
import { Code } from '../common/errors.js';
import type { Logger } from '../common/logger.js';
import { type Requirement, sandboxSettings } from '../executor/platform.js';
import type { ResourceLimits } from '../sandbox/cgroups.js';
import type { Sandbox, SandboxResult } from '../sandbox/sandbox.js';
import type { BlobStore } from '../storage/blob-store.js';
import { mountsUnder } from '../vfs/fuse-mount.js';

/** What every executor of commands is given, whether it executes actions or carries out runs. */
export interface CommandExecutorOptions {
  id: string;
  /** The CAS to read inputs from and store outputs in, per instance name. */
  cas: (instanceName: string) => BlobStore;
  sandbox: Sandbox;
  /** Scratch space: one directory per command, removed afterwards. */
  workDir: string;
  log: Logger;
  /** Used when the request sets no timeout. */
  defaultTimeoutMs: number;
  /** Upper bound on any request's timeout. */
  maxTimeoutMs: number;
  /** The sandbox user (default nobody), who must be able to write where the command writes. */
  uid?: number;
  gid?: number;
  /** Timestamps and deadlines; default the system clock. */
  clock?: Clock;
}

/** The parts of a request that decide how its command is sandboxed. */
export interface CommandRequest {
  /** As asked; zero or less means the default. */
  timeoutMs: number;
  environmentVariables: readonly { name: string; value: string }[];
  requirements: readonly Requirement[];
}

/** What the sandbox gets for a command, whoever asked for it. */
export interface PreparedCommand {
  timeoutMs: number;
  env: Record<string, string>;
  limits: ResourceLimits;
  network: boolean;
}

/** A command with no PATH of its own still finds the toolchain the sandbox shows. */
const DEFAULT_PATH = '/usr/local/bin:/usr/bin:/bin';

/** nobody: owns nothing on the host, so hard-linked CAS files stay out of the command's reach. */
const NOBODY = 65534;

export function prepareCommand(req: CommandRequest, o: Pick<CommandExecutorOptions, 'defaultTimeoutMs' | 'maxTimeoutMs'>): PreparedCommand {
  const env: Record<string, string> = {};
  for (const v of req.environmentVariables) env[v.name] = v.value;
  env.PATH ??= DEFAULT_PATH;
  return { timeoutMs: effectiveTimeoutMs(req.timeoutMs, o.defaultTimeoutMs, o.maxTimeoutMs), env, ...sandboxSettings(req.requirements) };
}

/**
 * The timeout a command gets: its own when positive, else the default, and
 * never more than the maximum. A zero or negative request can never mean
 * "no timeout" (Execute refuses negative ones; this guards every other path).
 */
export function effectiveTimeoutMs(requestedMs: number, defaultMs: number, maxMs: number): number {
  const wanted = Number.isFinite(requestedMs) && requestedMs > 0 ? requestedMs : defaultMs;
  return Math.max(1, Math.min(maxMs, wanted));
}

export function sandboxUser(o: Pick<CommandExecutorOptions, 'uid' | 'gid'>): { uid: number; gid: number } {
  return { uid: o.uid ?? NOBODY, gid: o.gid ?? NOBODY };
}

/** A fresh directory name under workDir; the time first, so that a listing shows the oldest first. */
export function scratchDirPath(workDir: string, prefix: string, clock: Clock): string {
  return path.join(workDir, `${prefix}${clock.now().toString(36)}-${randomBytes(4).toString('hex')}`);
}

/**
 * Removes a command's scratch directory, unless something is still mounted
 * under it: a recursive delete would walk into the mount (and through it,
 * into a client's tree or the command's symlinks). Such a directory is left
 * behind with a warning; the next start of the executor clears workDir.
 */
export async function removeScratchDir(dir: string, log: Logger, opts: { mayHoldMounts: boolean }): Promise<void> {
  const left = opts.mayHoldMounts ? await mountsUnder(dir).catch(() => [dir]) : [];
  if (left.length > 0) {
    log.warn({ dir, mounts: left }, 'scratch directory still has mounts; leaving it');
    return;
  }
  await rm(dir, { recursive: true, force: true }).catch((e: unknown) => log.warn({ err: e, dir }, 'could not remove a scratch directory'));
}

/** How a command ended, seen from its caller. */
export type CommandEnd = 'cancelled' | 'timed-out' | 'limit-exceeded' | 'out-of-memory' | 'exited';

export interface CommandOutcome {
  end: CommandEnd;
  /**
   * OK whenever the command's exit code is the answer (a non-zero exit and
   * running out of memory included); otherwise why there is no answer.
   */
  code: Code;
  /** For the user; empty for a command that exited 0 undisturbed. */
  message: string;
  /** Whether what the command wrote may be kept: collected as outputs, or written back to a client. */
  keepWrites: boolean;
}

export interface OutcomeContext {
  /** An action executed, or a `repr run` command. */
  kind: 'action' | 'run';
  executorId: string;
  timeoutMs: number;
  /** The caller gave up on the command. */
  cancelled: boolean;
  /** A deadline kept outside the sandbox fired (a run's covers more than the command). */
  timedOut?: boolean;
  /** The limits asked for, for naming the memory limit when the sandbox did not report it. */
  limits: ResourceLimits;
}

/**
 * One reading of a sandbox result for actions and runs alike.
 *
 * Running out of memory is the command's own failure, as is any non-zero
 * exit: status OK with the exit code, the message naming the limit. REAPI
 * clients read the exit code (Bazel shows the stderr and, by default, the
 * message of a failed action), an action with a non-zero exit is never
 * cached, and a run's client exits with the code. Buildbarn does the same:
 * its runner reports the process's exit code and records the OOM kill only
 * as resource usage.
 *
 * A cap of the sandbox the command broke is not an answer of the command:
 * FAILED_PRECONDITION for an action (a retry would break it again, and
 * clients retry RESOURCE_EXHAUSTED), RESOURCE_EXHAUSTED for a run (its
 * client shows the status and exits 125 either way).
 */
export function commandOutcome(r: SandboxResult, c: OutcomeContext): CommandOutcome {
  const run = c.kind === 'run';
  if (c.cancelled) {
    return { end: 'cancelled', code: Code.CANCELLED, message: run ? 'run cancelled; nothing was written back' : 'execution cancelled', keepWrites: false };
  }
  if (r.timedOut || c.timedOut) {
    const message = run ? runTimedOutMessage(c.timeoutMs) : `action timed out after ${c.timeoutMs} ms; its process tree was killed`;
    return { end: 'timed-out', code: Code.DEADLINE_EXCEEDED, message, keepWrites: false };
  }
  if (r.limitExceeded) {
    if (run)
      return { end: 'limit-exceeded', code: Code.RESOURCE_EXHAUSTED, message: `${r.limitExceeded.message}; nothing was written back`, keepWrites: false };
    return { end: 'limit-exceeded', code: Code.FAILED_PRECONDITION, message: `${r.limitExceeded.message} on ${c.executorId}`, keepWrites: false };
  }
  const exit = `exit code ${r.exitCode}${r.signal ? `, killed by ${r.signal}` : ''}`;
  if (r.oomKilled) {
    const limit = r.memoryLimitBytes ?? c.limits.memoryBytes;
    const message = `the ${run ? 'command' : 'action'} reached its memory limit${limit !== undefined ? ` of ${limit} bytes` : ''} and the kernel killed a process of it (${exit}) on ${c.executorId}`;
    return { end: 'out-of-memory', code: Code.OK, message, keepWrites: true };
  }
  // A run's client shows a non-zero exit as its own exit code; an action's carries a message for the build log.
  const message = r.exitCode !== 0 && !run ? `action exited with code ${r.exitCode}${r.signal ? ` (killed by ${r.signal})` : ''} on ${c.executorId}` : '';
  return { end: 'exited', code: Code.OK, message, keepWrites: true };
}

/** Also used when a run's deadline passes before its command started. */
export function runTimedOutMessage(timeoutMs: number): string {
  return `run timed out after ${timeoutMs} ms; its process tree was killed and nothing was written back`;
}
