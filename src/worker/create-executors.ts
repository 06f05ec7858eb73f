import os from 'node:os';
import { BUILT_IN, type ExecutorSlot } from '../executor/executor-slot.js';
import type { ExecutorCapabilities } from '../executor/platform.js';
import { fuseUnavailable } from '../vfs/fuse-available.js';
import type { CommandExecutorOptions } from './command-core.js';
import type { InputLimits } from './input-root.js';
import { LocalExecutor } from './local-executor.js';
import { sandboxUser } from './command-core.js';
import { type OverlaySupport, RunDirsAhead } from './run-dir.js';
import { RunExecutor } from './run-executor.js';
import { systemClock } from '../common/clock.js';

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

/** A machine's executors, and what they keep between commands: close() removes it. */
export interface Executors {
  slots: ExecutorSlot[];
  close(): Promise<void>;
}

/**
 * The executors of one machine, the server's built-in ones or a `repr
 * worker`'s: each slot executes actions and, where FUSE can be mounted,
 * carries out `repr run`s. Their run executors share what they learn about
 * overlayfs on this machine, and the run directory made ahead for the next run.
 */
export function createExecutors(o: CreateExecutorsOptions): Executors {
  const noFuse = fuseUnavailable();
  if (noFuse) o.log.warn({ reason: noFuse }, 'these executors take no `repr run`s');
  const overlaySupport: OverlaySupport = { unavailable: false };
  const ahead = noFuse
    ? undefined
    : new RunDirsAhead({
        workDir: o.workDir,
        clock: o.clock ?? systemClock,
        log: o.log,
        ...sandboxUser(o),
        writes: o.runWrites ?? 'overlay',
        overlaySupport,
      });
  const { count, id, caps, runWrites, ...common } = o;
  const slots: ExecutorSlot[] = [];
  for (let i = 0; i < count; i++) {
    const opts = { ...common, id: id(i), log: o.log.child({ executor: i }) };
    const executor = new LocalExecutor(opts);
    const slot: ExecutorSlot = { id: executor.id, caps, owner: BUILT_IN, execute: (task, signal) => executor.execute(task, signal) };
    if (!noFuse) {
      const runs = new RunExecutor({ ...opts, overlaySupport, ...(ahead ? { ahead } : {}), ...(runWrites ? { writes: runWrites } : {}) });
      slot.run = (req, host, signal) => runs.run(req, host, signal);
    }
    slots.push(slot);
  }
  return { slots, close: async () => await ahead?.close() };
}

/** The id of the server's built-in executor i. */
export function defaultExecutorId(i: number): string {
  return `${os.hostname()}/local-${i}`;
}
