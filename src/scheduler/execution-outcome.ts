import { Code } from '../common/errors.js';
import type { ExecuteResponse } from '../proto/build/bazel/remote/execution/v2/remote_execution.js';

/**
 * How an execution ended, as counted for metrics: from the action cache
 * (cached), the command exited 0 (succeeded) or not (failed), it ran out of
 * time (timed_out), it was cancelled, or it could not be carried out at all
 * (error: a sandbox, input or executor failure, or no executor for it).
 */
export const EXECUTION_OUTCOMES = ['succeeded', 'failed', 'cached', 'timed_out', 'cancelled', 'error'] as const;
export type ExecutionOutcome = (typeof EXECUTION_OUTCOMES)[number];

export function executionOutcome(response: ExecuteResponse): ExecutionOutcome {
  if (response.cachedResult) return 'cached';
  const code = response.status?.code ?? Code.OK;
  if (code === Code.DEADLINE_EXCEEDED) return 'timed_out';
  if (code === Code.CANCELLED) return 'cancelled';
  if (code !== Code.OK) return 'error';
  return (response.result?.exitCode ?? 0) === 0 ? 'succeeded' : 'failed';
}

/** Executions so far by outcome. */
export type OutcomeCounts = Record<ExecutionOutcome, number>;

export const noOutcomes = (): OutcomeCounts => ({ succeeded: 0, failed: 0, cached: 0, timed_out: 0, cancelled: 0, error: 0 });
