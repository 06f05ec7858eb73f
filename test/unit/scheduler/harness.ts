import assert from 'node:assert/strict';
import { type Clock, ManualClock } from '../../../src/common/clock.js';
import { computeDigest, SHA256 } from '../../../src/common/digest.js';
import { silentLogger } from '../../../src/common/logger.js';
import type { ExecutionTask } from '../../../src/executor/execution-task.js';
import { BUILT_IN, type ExecutorSlot } from '../../../src/executor/executor-slot.js';
import { Action, Command, ExecuteResponse } from '../../../src/proto/build/bazel/remote/execution/v2/remote_execution.js';
import { OperationStore } from '../../../src/scheduler/operation-store.js';
import { LocalScheduler } from '../../../src/scheduler/local-scheduler.js';
import type { LocalSchedulerOptions, OperationState, Scheduler, SubmitRequest } from '../../../src/scheduler/scheduler.js';
import { ActionCache } from '../../../src/storage/action-cache.js';
import { MemoryBlobStore } from '../../../src/storage/memory-store.js';

/** A scheduler on a ManualClock, with in-memory stores. */
export function harness(opts: Partial<LocalSchedulerOptions> = {}) {
  const clock = new ManualClock(Date.parse('2024-01-01T00:00:00Z'));
  const cas = new MemoryBlobStore(1 << 20);
  const actionCache = new ActionCache(new MemoryBlobStore(1 << 20), cas);
  const scheduler = new LocalScheduler({ store: new OperationStore(':memory:', clock), cas, actionCache, log: silentLogger(), clock, ...opts });
  return { scheduler, clock, cas, actionCache };
}

/** Lets pending promise callbacks run; no time passes on the clock. */
export function flush(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

/** Moves the clock forward in steps, letting callbacks run between them, until `done()` holds. */
export async function advanceUntil(clock: ManualClock, done: () => boolean, stepMs = 10, maxSteps = 10_000): Promise<void> {
  for (let i = 0; !done(); i++) {
    assert.ok(i < maxSteps, `not done after ${(maxSteps * stepMs) / 1000} s of clock time`);
    clock.advance(stepMs);
    await flush();
  }
}

/** The owner operations of these tests are submitted under (the anonymous principal's). */
export const OWNER = '';

export const caps = (properties: Record<string, string[]> = {}) => ({ properties, cpus: 2, memoryBytes: 1 << 30, networkAllowed: false });

export function actionDigest(i: number) {
  return computeDigest(SHA256, Buffer.from(`action ${i}`));
}

export function submitReq(i: number, requirements: { name: string; value: string }[] = [], priority = 0, action: Partial<Action> = {}): SubmitRequest {
  return {
    instanceName: '',
    fn: SHA256,
    actionDigest: actionDigest(i),
    action: Action.fromPartial(action),
    command: Command.fromPartial({ arguments: ['x'] }),
    requirements,
    priority,
  };
}

export const ok = () => ExecuteResponse.fromPartial({ result: { exitCode: 0 }, status: { code: 0 } });

/** An executor that records what it executes and answers `respond` after `workMs` of clock time. */
export function slot(
  id: string,
  clock: Clock,
  opts: {
    properties?: Record<string, string[]>;
    log?: string[];
    tasks?: ExecutionTask[];
    workMs?: number;
    respond?: (t: ExecutionTask) => ExecuteResponse | Promise<ExecuteResponse>;
  } = {},
): ExecutorSlot {
  return {
    id,
    caps: caps(opts.properties),
    owner: BUILT_IN,
    execute: async (task) => {
      opts.log?.push(`${id}:${task.actionDigest.hash.slice(0, 8)}`);
      opts.tasks?.push(task);
      await new Promise<void>((r) => clock.setTimeout(r, opts.workMs ?? 20));
      return (opts.respond ?? ok)(task);
    },
  };
}

/** Tracks operations to completion. */
export function finished(s: Scheduler, names: readonly string[]): { all: () => boolean; states: Map<string, OperationState> } {
  const states = new Map<string, OperationState>();
  for (const n of names) s.watch(n, (st) => st.response && states.set(n, st));
  return { all: () => names.every((n) => states.has(n)), states };
}
