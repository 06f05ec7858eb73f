import { type DigestFunction, digestFunctionFromValue } from '../common/digest.js';
import { invalidArgument } from '../common/errors.js';
import type { RunRequest } from '../proto/repr/run/v1/run.js';
import { MAX_LISTING_ENTRIES, pathNodesFromWire } from '../vfs/nodes.js';
import { checkAbsolute, checkRoots, checkWorkingDirectory, rootOf } from '../vfs/paths.js';
import type { VPathNode } from '../vfs/vfs.js';

/**
 * Bounds on what one RunRequest may ask for. A request comes from a client
 * the server does not trust, and is held (parsed, queued, relayed to a
 * worker, mounted) before any command runs; every count and size has a
 * ceiling well above real use so that none of it grows without bound.
 */
export const RUN_REQUEST_LIMITS = {
  runIdBytes: 256,
  /** execve's own ceilings: one argument or variable (MAX_ARG_STRLEN), all of them together. */
  argBytes: 128 * 1024,
  argvAndEnvBytes: 2 * 1024 * 1024,
  arguments: 64 * 1024,
  environmentVariables: 4096,
  /** Mapped paths plus the listing entries they carry. */
  mappedNodes: MAX_LISTING_ENTRIES,
  platformProperties: 64,
  platformBytes: 1024,
  instanceNameBytes: 1024,
} as const;

const L = RUN_REQUEST_LIMITS;

/**
 * Checks what can be checked before a run takes an executor; throws
 * INVALID_ARGUMENT. The scheduler checks before holding an executor, and the
 * executor again, as a worker trusts nothing it is sent.
 */
export function checkRunRequest(req: RunRequest): { roots: string[]; fn: DigestFunction; mappings: VPathNode[] } {
  if (!req.runId) throw invalidArgument('run_id is empty');
  if (Buffer.byteLength(req.runId) > L.runIdBytes) throw invalidArgument(`run_id is longer than ${L.runIdBytes} bytes`);
  if (req.arguments.length === 0 || !req.arguments[0]) throw invalidArgument('a run needs a command (arguments is empty)');
  if (req.arguments.length > L.arguments) throw invalidArgument(`a command may have at most ${L.arguments} arguments, not ${req.arguments.length}`);
  let total = 0;
  req.arguments.forEach((a, i) => {
    total += execString(a, `argument ${i}`);
  });
  if (req.environmentVariables.length > L.environmentVariables) {
    throw invalidArgument(`a run may set at most ${L.environmentVariables} environment variables, not ${req.environmentVariables.length}`);
  }
  for (const v of req.environmentVariables) {
    if (!v.name || v.name.includes('=')) throw invalidArgument(`environment variable name ${JSON.stringify(v.name.slice(0, 100))} is empty or holds '='`);
    total += execString(`${v.name}=${v.value}`, `environment variable ${v.name.slice(0, 100)}`);
  }
  if (total > L.argvAndEnvBytes) throw invalidArgument(`arguments and environment add up to ${total} bytes, over the limit of ${L.argvAndEnvBytes}`);
  const roots = checkRoots(req.roots);
  checkWorkingDirectory(req.workingDirectory, roots);
  if (!Number.isSafeInteger(req.timeoutMs) || req.timeoutMs < 0)
    throw invalidArgument(`timeout_ms ${req.timeoutMs} is negative (0 means the server's default)`);
  if (Buffer.byteLength(req.instanceName) > L.instanceNameBytes) throw invalidArgument(`instance_name is longer than ${L.instanceNameBytes} bytes`);
  if (req.platform.length > L.platformProperties)
    throw invalidArgument(`a run may give at most ${L.platformProperties} platform properties, not ${req.platform.length}`);
  for (const p of req.platform) {
    if (Buffer.byteLength(p.name) + Buffer.byteLength(p.value) > L.platformBytes)
      throw invalidArgument(`platform property ${p.name.slice(0, 100)} is longer than ${L.platformBytes} bytes`);
  }
  const fn = digestFunctionFromValue(req.digestFunction);
  let nodes = 0;
  for (const m of req.mappings) {
    nodes += 1 + (m.node?.entries.length ?? 0);
    if (nodes > L.mappedNodes) throw invalidArgument(`mappings carry more than ${L.mappedNodes} paths and listing entries`);
    checkAbsolute(m.path, 'mapping path');
    if (!rootOf(m.path, roots)) throw invalidArgument(`mapping ${m.path} is outside every root`);
  }
  // Parsed here so that a bad mapping fails the request, not the mount.
  return { roots, fn, mappings: pathNodesFromWire(fn, req.mappings, 'mappings') };
}

/** A string execve can pass (no NUL, within MAX_ARG_STRLEN); its size as execve counts it. */
function execString(s: string, what: string): number {
  if (s.includes('\0')) throw invalidArgument(`${what} holds a NUL byte`);
  const n = Buffer.byteLength(s) + 1;
  if (n > L.argBytes) throw invalidArgument(`${what} is longer than ${L.argBytes} bytes`);
  return n;
}
