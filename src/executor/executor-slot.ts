import { Code, ReprError } from '../common/errors.js';
import type { ExecuteResponse } from '../proto/build/bazel/remote/execution/v2/remote_execution.js';
import type { RunFinished, RunRequest } from '../proto/repr/run/v1/run.js';
import type { ExecutionTask } from './execution-task.js';
import type { ExecutorCapabilities } from './platform.js';
import type { RunHost } from './run-host.js';

/**
 * Who answers for an executor's results: the server itself for built-in
 * executors, or the principal a worker connected as. The scheduler writes a
 * result to the action cache only if its owner may (see ResultCache).
 */
export interface ExecutorOwner {
  /** The worker's principal, or BUILT_IN's name. */
  principal: string;
  /** Whether results it delivers for this instance may be written to the action cache. */
  mayWriteCache(instanceName: string): boolean;
}

/** The owner of the server's own executors: the server trusts what it executed itself. */
export const BUILT_IN: ExecutorOwner = { principal: '(built-in)', mayWriteCache: () => true };

/** Something that runs one action at a time: a local executor, or one executor of a remote worker. */
export interface ExecutorSlot {
  id: string;
  caps: ExecutorCapabilities;
  owner: ExecutorOwner;
  execute(task: ExecutionTask, signal: AbortSignal): Promise<ExecuteResponse>;
  /** Carries out a `repr run` (only executors that can mount FUSE offer it). */
  run?(req: RunRequest, host: RunHost, signal: AbortSignal): Promise<RunFinished>;
}

/** An executor held for one `repr run`; give it back with release(). */
export interface HeldExecutor {
  slot: ExecutorSlot & Required<Pick<ExecutorSlot, 'run'>>;
  release(): void;
}

/**
 * Thrown by an executor that lost the action through no fault of the action
 * (its worker died, was cut off, or handed it back while draining): the
 * scheduler runs the action again elsewhere instead of reporting a failure.
 */
export class ExecutorLostError extends ReprError {
  constructor(message: string) {
    super(Code.UNAVAILABLE, message);
  }
}

/** What `repr status` shows of one worker (or of the server's own executors). */
export interface WorkerGroup {
  name: string;
  address: string;
  /** The principal the worker connected as (BUILT_IN's name for the server's own executors). */
  principal: string;
  slots: ExecutorSlot[];
  properties: Record<string, readonly string[]>;
  draining: boolean;
  connected: Date;
  lastHeartbeat?: Date;
}
