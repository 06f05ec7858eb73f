import path from 'node:path';
import { invalidArgument } from '../common/errors.js';

/**
 * Directories a run may not virtualize: the sandbox shows them from the
 * worker's host (the toolchain) or makes them itself, and a root over them
 * would hide them or be hidden.
 */
const RESERVED = ['/usr', '/bin', '/sbin', '/lib', '/lib32', '/lib64', '/libx32', '/etc', '/proc', '/dev', '/sys', '/run', '/b'];

/** True when `p` is `dir` or inside it (both absolute and normalized). */
export function isWithin(p: string, dir: string): boolean {
  return p === dir || p.startsWith(dir === '/' ? '/' : `${dir}/`);
}

/** An absolute, normalized path, or an INVALID_ARGUMENT saying which field was wrong. */
export function checkAbsolute(p: string, what: string): string {
  if (!p.startsWith('/') || p.includes('\0') || path.posix.normalize(p) !== p || (p.length > 1 && p.endsWith('/'))) {
    throw invalidArgument(`${what} must be an absolute, normalized path: ${JSON.stringify(p)}`);
  }
  return p;
}

/** Checks a run's roots: absolute, not nested in each other, clear of the sandbox's own directories. */
export function checkRoots(roots: readonly string[]): string[] {
  if (roots.length === 0) throw invalidArgument('a run needs at least one root directory');
  for (const r of roots) {
    checkAbsolute(r, 'root');
    if (r === '/' || r === '/tmp') throw invalidArgument(`root ${r} is too broad; name the project directory`);
    const clash = RESERVED.find((x) => isWithin(r, x) || isWithin(x, r));
    if (clash) throw invalidArgument(`root ${r} overlaps ${clash}, which the sandbox takes from the worker`);
    const nested = roots.find((o) => o !== r && isWithin(r, o));
    if (nested) throw invalidArgument(`root ${r} is inside root ${nested}; give only the outer one`);
  }
  return [...new Set(roots)];
}

/** The root holding `p`, if any. */
export function rootOf(p: string, roots: readonly string[]): string | undefined {
  return roots.find((r) => isWithin(p, r));
}
