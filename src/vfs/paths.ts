import path from 'node:path';
import { invalidArgument } from '../common/errors.js';

/**
 * Directories a run may not virtualize: the sandbox shows them from the
 * worker's host (the toolchain) or makes them itself, and a root over them
 * would hide them or be hidden. /tmp itself is the sandbox's private tmpfs;
 * a project below it is bound over that tmpfs and stays allowed.
 */
const RESERVED = ['/usr', '/bin', '/sbin', '/lib', '/lib32', '/lib64', '/libx32', '/etc', '/proc', '/dev', '/sys', '/run', '/b'];

/** Linux's PATH_MAX and NAME_MAX: longer paths cannot be opened anyway, so they can only be an attack on memory. */
export const MAX_PATH_BYTES = 4095;
export const MAX_NAME_BYTES = 255;
/** More roots than any project has; each costs a bind mount and a scan of the list per lookup. */
export const MAX_ROOTS = 64;

/** True when `p` is `dir` or inside it (both absolute and normalized). */
export function isWithin(p: string, dir: string): boolean {
  return p === dir || p.startsWith(dir === '/' ? '/' : `${dir}/`);
}

/** An absolute, normalized path of sane length, or an INVALID_ARGUMENT saying which field was wrong. */
export function checkAbsolute(p: string, what: string): string {
  if (!p.startsWith('/') || p.includes('\0') || path.posix.normalize(p) !== p || (p.length > 1 && p.endsWith('/'))) {
    throw invalidArgument(`${what} must be an absolute, normalized path: ${JSON.stringify(clip(p))}`);
  }
  if (Buffer.byteLength(p) > MAX_PATH_BYTES) throw invalidArgument(`${what} is longer than ${MAX_PATH_BYTES} bytes: ${JSON.stringify(clip(p))}`);
  if (p.split('/').some((c) => Buffer.byteLength(c) > MAX_NAME_BYTES)) {
    throw invalidArgument(`${what} has a component longer than ${MAX_NAME_BYTES} bytes: ${JSON.stringify(clip(p))}`);
  }
  return p;
}

/** Checks a run's roots: absolute, not nested in each other, clear of the sandbox's own directories. */
export function checkRoots(roots: readonly string[]): string[] {
  if (roots.length === 0) throw invalidArgument('a run needs at least one root directory');
  if (roots.length > MAX_ROOTS) throw invalidArgument(`a run may have at most ${MAX_ROOTS} roots, not ${roots.length}`);
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

/**
 * The command starts in its working directory, which the sandbox resolves
 * among the roots' binds; anywhere else it would be a directory of the
 * worker's host (or one bwrap makes up).
 */
export function checkWorkingDirectory(wd: string, roots: readonly string[]): string {
  checkAbsolute(wd, 'working_directory');
  if (!rootOf(wd, roots)) throw invalidArgument(`working_directory ${wd} is not inside a root (roots: ${roots.join(', ')})`);
  return wd;
}

/** The root holding `p`, if any. */
export function rootOf(p: string, roots: readonly string[]): string | undefined {
  return roots.find((r) => isWithin(p, r));
}

function clip(s: string): string {
  return s.length > 200 ? `${s.slice(0, 200)}...` : s;
}
