import type { ResourceLimits } from './cgroups.js';

export interface SandboxSpec {
  /** argv[0] is resolved inside the sandbox (PATH from `env`, or absolute). */
  argv: string[];
  env: Record<string, string>;
  /** Host directory holding the action's input root, shown at SANDBOX_ROOT; writable by the action. */
  rootDir?: string;
  /**
   * Host directories shown writable at other paths inside (a `repr run`'s
   * virtualized roots, each at the client's own absolute path).
   */
  binds?: { host: string; path: string }[];
  /** Working directory: relative to the root when rootDir is set, else absolute. */
  workingDirectory: string;
  /** Files on the host that receive stdout and stderr. */
  stdoutPath?: string;
  stderrPath?: string;
  /** Or: stdout and stderr as they come (used when the paths are not set; not capped). */
  onOutput?: (stream: 'stdout' | 'stderr', chunk: Buffer) => void;
  /**
   * Host directories where the action's writes land, held to the sandbox's
   * write caps. Default: rootDir. Binds are not measured unless listed: a
   * `repr run` bind is a FUSE view, so list its overlay upper layer instead.
   */
  writableDirs?: string[];
  /** 0 = no timeout. */
  timeoutMs: number;
  limits: ResourceLimits;
  /** Give the action a network (the host's); off by default. */
  network: boolean;
}

/** The sandbox's own caps, beyond the cgroup's memory, pids and CPU. */
export type SandboxLimit = 'stdout-bytes' | 'stderr-bytes' | 'write-bytes' | 'write-entries';

export interface LimitExceeded {
  limit: SandboxLimit;
  /** The cap: bytes, or a count for write-entries. */
  max: number;
  /** Names the cap, for the action's result and its stderr. */
  message: string;
}

export interface SandboxResult {
  exitCode: number;
  /** Set when the process was killed by a signal. */
  signal?: string;
  timedOut: boolean;
  oomKilled: boolean;
  wallMs: number;
  peakMemoryBytes?: number;
  /** The memory limit applied: the action's own, or the sandbox's default. */
  memoryLimitBytes?: number;
  /**
   * Set when the action broke one of the sandbox's caps: it was killed (or, if
   * it had already exited, its result must still fail). Only the first one.
   */
  limitExceeded?: LimitExceeded;
}

/**
 * Runs one command isolated from the host. The seam between an executor and
 * the mechanism (bubblewrap today), so that another mechanism or a remote
 * runner process can replace it.
 */
export interface Sandbox {
  run(spec: SandboxSpec, signal?: AbortSignal): Promise<SandboxResult>;
}

/** The path at which the input root appears inside the sandbox. */
export const SANDBOX_ROOT = '/b/r';
