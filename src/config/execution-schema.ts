import os from 'node:os';
import { z } from 'zod';
import { byteSize } from './schema.js';

const GiB = 1024 ** 3;

/**
 * What executors offer and how they run actions: the same fields, with the
 * same defaults, for a server's built-in executors and for `repr worker`.
 */
export const executorFields = {
  /** Actions run at once. On a server, 0 makes a pure scheduler that only external workers (`repr worker`) serve. */
  executors: z
    .number()
    .int()
    .nonnegative()
    .default(() => os.cpus().length),
  /** Platform properties every executor offers (matched exactly). */
  properties: z.record(z.union([z.string(), z.array(z.string())])).default({ OSFamily: 'linux' }),
  /** Cores and memory an action may ask for at most (EngFlow-style cpu/memory properties). */
  cpus: z
    .number()
    .positive()
    .default(() => os.cpus().length),
  memoryBytes: byteSize.default(() => os.totalmem()),
  /** Whether actions may ask for the host network (network=on). */
  allowNetwork: z.boolean().default(false),
  defaultTimeoutSeconds: z.number().positive().max(2_000_000).default(900),
  /** Capped so that it fits a Node timer (about 24.8 days); longer would fire at once. */
  maxTimeoutSeconds: z.number().positive().max(2_000_000).default(3600),
  /** Bounds on an action's input root, counted before it is staged (a small tree in the CAS can expand exponentially). */
  maxInputNodes: z.number().int().positive().default(1_000_000),
  maxInputBytes: byteSize.default(64 * GiB),
  maxInputDepth: z.number().int().positive().max(4096).default(512),
  /** Host paths visible read-only in the sandbox; default: the toolchain (/usr, /bin, /lib*, parts of /etc). */
  readOnlyPaths: z.array(z.string()).optional(),
  /** The sandbox's own limits and hardening; unset fields keep BwrapSandbox's defaults (see BwrapSandboxOptions). */
  sandbox: z
    .object({
      defaultMemoryBytes: byteSize.optional(),
      maxStdoutBytes: byteSize.optional(),
      maxStderrBytes: byteSize.optional(),
      maxWriteBytes: byteSize.optional(),
      maxWriteEntries: z.number().int().nonnegative().optional(),
      tmpBytes: byteSize.optional(),
      seccomp: z.boolean().optional(),
      allowPtrace: z.boolean().optional(),
      disableUserns: z.boolean().optional(),
    })
    .strict()
    .default({}),
};

/** Properties as executors take them: every value a list. */
export function propertyLists(properties: Record<string, string | string[]>): Record<string, string[]> {
  return Object.fromEntries(Object.entries(properties).map(([k, v]) => [k, Array.isArray(v) ? v : [v]]));
}
