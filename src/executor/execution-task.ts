import type { Digest, DigestFunction } from '../common/digest.js';
import type { TraceContext } from '../common/tracing.js';
import type { Action, Command } from '../proto/build/bazel/remote/execution/v2/remote_execution.js';
import type { Requirement } from './platform.js';

/** One action to run, as the scheduler hands it to an executor. */
export interface ExecutionTask {
  operationName: string;
  /** For the executor's own CAS calls. */
  instanceName: string;
  fn: DigestFunction;
  actionDigest: Digest;
  action: Action;
  command: Command;
  requirements: Requirement[];
  queuedAt: Date;
  /** The span the executor's phases (fetch inputs, run, upload outputs) belong under; absent while tracing is off. */
  trace?: TraceContext;
}
