import path from 'node:path';
import { invalidArgument } from '../common/errors.js';

/** A path of a Command (output, working directory): relative, inside the input root; returned normalized ('' for the root). */
export function assertRelativePath(p: string, what: string): string {
  const norm = path.posix.normalize(p);
  if (p.startsWith('/') || norm.startsWith('..') || norm.includes('\0')) throw invalidArgument(`${what} "${p}" must be a relative path inside the input root`);
  return norm === '.' ? '' : norm;
}
