import type { Logger } from '../common/logger.js';
import type { ExecutorOwner } from '../executor/executor-slot.js';
import type { Action, ExecuteResponse } from '../proto/build/bazel/remote/execution/v2/remote_execution.js';
import type { ActionCache } from '../storage/action-cache.js';
import type { Digest } from '../common/digest.js';

/** The action an outcome belongs to, and the operation that executed it (for the log). */
export interface ExecutedAction {
  name: string;
  instanceName: string;
  actionDigest: Digest;
  action: Action;
}

/** Whether REAPI lets a later request reuse this outcome: a clean exit, and an action that allows caching. */
export function cacheable(action: Action, response: ExecuteResponse): boolean {
  return !response.status?.code && response.result !== undefined && response.result.exitCode === 0 && !action.doNotCache;
}

/**
 * Writes the outcomes executors deliver to the action cache, when they may
 * be reused and their executor's owner may write it: a result is only as
 * good as whoever executed it, and one written here is served to everyone.
 */
export class ResultCache {
  /** Results kept out of the action cache because their executor's owner may not write it. */
  untrusted = 0;

  constructor(
    private readonly actionCache: ActionCache,
    private readonly log: Logger,
  ) {}

  /** Never throws: a failed write costs a later execution, not this operation its result. */
  async record(op: ExecutedAction, response: ExecuteResponse, owner: ExecutorOwner): Promise<void> {
    if (!cacheable(op.action, response)) return;
    if (!owner.mayWriteCache(op.instanceName)) {
      this.untrusted++;
      this.log.warn(
        { op: op.name, principal: owner.principal, instance: op.instanceName },
        'result not written to the action cache: its worker principal lacks the worker permission for this instance',
      );
      return;
    }
    try {
      await this.actionCache.put(op.instanceName, op.actionDigest, response.result!);
    } catch (e) {
      this.log.warn({ err: e, op: op.name }, 'could not write the action cache');
    }
  }
}
