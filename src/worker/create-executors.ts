import os from 'node:os';
import { BUILT_IN, type ExecutorSlot } from '../executor/executor-slot.js';
import type { ExecutorCapabilities } from '../executor/platform.js';
import { fuseUnavailable } from '../vfs/fuse-available.js';
import type { CommandExecutorOptions } from './command-core.js';
import type { InputLimits } from './input-root.js';
import { LocalExecutor } from './local-executor.js';
import { type OverlaySupport, RunExecutor } from './run-executor.js';

export interface CreateExecutorsOptions extends Omit<CommandExecutorOptions, 'id'> {
  count: number;
  /** Executor i's id, unique among the scheduler's executors. */
  id: (i: number) => string;
  /** What every one of them offers the scheduler. */
  caps: ExecutorCapabilities;
  /** Bounds on an action's input root (default DEFAULT_INPUT_LIMITS). */
  inputLimits?: InputLimits;
  /** Where `repr run`s write (see RunExecutorOptions.writes). */
  runWrites?: 'overlay' | 'fuse';
}

/**
 * The executors of one machine, the server's built-in ones or a `repr
 * worker`'s: each slot executes actions and, where FUSE can be mounted,
 * carries out `repr run`s. Their run executors share what they learn about
 * overlayfs on this machine.
 */
export function createExecutors(o: CreateExecutorsOptions): ExecutorSlot[] {
  const noFuse = fuseUnavailable();
  if (noFuse) o.log.warn({ reason: noFuse }, 'these executors take no `repr run`s');
  const overlaySupport: OverlaySupport = { unavailable: false };
  const { count, id, caps, runWrites, ...common } = o;
  const slots: ExecutorSlot[] = [];
  for (let i = 0; i < count; i++) {
    const opts = { ...common, id: id(i), log: o.log.child({ executor: i }) };
    const executor = new LocalExecutor(opts);
    const slot: ExecutorSlot = { id: executor.id, caps, owner: BUILT_IN, execute: (task, signal) => executor.execute(task, signal) };
    if (!noFuse) {
      const runs = new RunExecutor({ ...opts, overlaySupport, ...(runWrites ? { writes: runWrites } : {}) });
      slot.run = (req, host, signal) => runs.run(req, host, signal);
    }
    slots.push(slot);
  }
  return slots;
}

/** The id of the server's built-in executor i. */
export function defaultExecutorId(i: number): string {
  return `${os.hostname()}/local-${i}`;
}
