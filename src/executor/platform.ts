import { parseByteSize } from '../common/units.js';
import type { ResourceLimits } from '../sandbox/cgroups.js';

/** What an executor offers: named properties (each with one or more values) and resources. */
export interface ExecutorCapabilities {
  properties: Readonly<Record<string, readonly string[]>>;
  /** Cores an action may ask for at most. */
  cpus: number;
  memoryBytes: number;
  /** Whether actions may ask for network access. */
  networkAllowed: boolean;
}

export interface Requirement {
  name: string;
  value: string;
}

/**
 * Platform properties that are resource requests rather than labels to match
 * (EngFlow-style): the action gets a sandbox sized to them, and an executor
 * qualifies if it has at least that much.
 *   cpu / cores: cores of CPU quota (e.g. "2", "0.5")
 *   memory: bytes or a size ("512MiB", "2g")
 *   pids: most processes
 *   network: "on"/"true"/"standard" gives the action the host network
 *   dockerNetwork: "standard" does the same (Bazel's docker strategy name)
 */
const RESOURCE = new Set(['cpu', 'cores', 'memory', 'pids', 'network', 'dockerNetwork']);

function truthyNetwork(v: string): boolean {
  return ['on', 'true', 'yes', 'standard', 'host', '1'].includes(v.toLowerCase());
}

/** Reasons an executor cannot run an action with these requirements; empty if it can. */
export function unmet(reqs: readonly Requirement[], caps: ExecutorCapabilities): string[] {
  const why: string[] = [];
  for (const { name, value } of reqs) {
    if (name === 'cpu' || name === 'cores') {
      const n = Number(value);
      if (!(n > 0)) why.push(`${name}=${value} (not a positive number)`);
      else if (n > caps.cpus) why.push(`${name}=${value} (executors have ${caps.cpus})`);
    } else if (name === 'memory') {
      const n = parseByteSize(value);
      if (n === undefined) why.push(`memory=${value} (not a size)`);
      else if (n > caps.memoryBytes) why.push(`memory=${value} (executors have ${caps.memoryBytes} bytes)`);
    } else if (name === 'pids') {
      if (!(Number(value) > 0)) why.push(`pids=${value} (not a positive number)`);
    } else if (name === 'network' || name === 'dockerNetwork') {
      if (truthyNetwork(value) && !caps.networkAllowed) why.push(`${name}=${value} (network access is not allowed)`);
    } else if (!caps.properties[name]?.includes(value)) {
      why.push(`${name}=${value}`);
    }
  }
  return why;
}

/** The sandbox settings an action's platform asks for. */
export function sandboxSettings(reqs: readonly Requirement[]): { limits: ResourceLimits; network: boolean } {
  const limits: ResourceLimits = {};
  let network = false;
  for (const { name, value } of reqs) {
    if (!RESOURCE.has(name)) continue;
    if (name === 'cpu' || name === 'cores') limits.cpus = Number(value);
    else if (name === 'memory') limits.memoryBytes = parseByteSize(value);
    else if (name === 'pids') limits.pids = Number(value);
    else network = truthyNetwork(value);
  }
  return { limits, network };
}
