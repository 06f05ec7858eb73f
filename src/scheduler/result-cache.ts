import type { Logger } from '../common/logger.js';
import type { Action, ExecuteResponse } from '../proto/build/bazel/remote/execution/v2/remote_execution.js';
import type { ActionCache } from '../storage/action-cache.js';
import type { LiveOperation } from './operation-book.js';

/** Whether REAPI lets a later request reuse this outcome: a clean exit, and an action that allows caching. */
export function cacheable(action: Action, response: ExecuteResponse): boolean {
  return !response.status?.code && response.result !== undefined && response.result.exitCode === 0 && !action.doNotCache;
}

/** Writes the outcomes executors deliver to the action cache, when they may be reused. */
export class ResultCache {
  constructor(
    private readonly actionCache: ActionCache,
    private readonly log: Logger,
  ) {}

  /** Never throws: a failed write costs a later execution, not this operation its result. */
  async record(op: LiveOperation, response: ExecuteResponse): Promise<void> {
    if (!cacheable(op.req.action, response)) return;
    try {
      await this.actionCache.put(op.req.instanceName, op.req.actionDigest, response.result!);
    } catch (e) {
      this.log.warn({ err: e, op: op.state.name }, 'could not write the action cache');
    }
  }
}
