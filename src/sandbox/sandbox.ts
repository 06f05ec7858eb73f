import type { ResourceLimits } from './cgroups.js';

export interface SandboxSpec {
  /** argv[0] is resolved inside the sandbox (PATH from `env`, or absolute). */
  argv: string[];
  env: Record<string, string>;
  /** Host directory holding the action's input root; writable by the action. */
  rootDir: string;
  /** Working directory relative to the root. */
  workingDirectory: string;
  /** Files on the host that receive stdout and stderr. */
  stdoutPath: string;
  stderrPath: string;
  /** 0 = no timeout. */
  timeoutMs: number;
  limits: ResourceLimits;
  /** Give the action a network (the host's); off by default. */
  network: boolean;
}

export interface SandboxResult {
  exitCode: number;
  /** Set when the process was killed by a signal. */
  signal?: string;
  timedOut: boolean;
  oomKilled: boolean;
  wallMs: number;
  peakMemoryBytes?: number;
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
