import type { Stats } from 'node:fs';
import { chmod, lstat, mkdir, readlink } from 'node:fs/promises';
import path from 'node:path';
import { SANDBOX_ROOT } from '../sandbox/sandbox.js';

/** Where a path inside an action's input root leads, seen from the host. */
export type RootPath =
  /** `host` is a host path whose every parent is a real directory inside the root (none is a symlink). */
  | { kind: 'inside'; host: string; rel: string }
  | { kind: 'missing' }
  /** A symlink (or `..`) on the way leads out of the root; `why` says which. */
  | { kind: 'outside'; why: string };

export interface ResolveOptions {
  /** Follow a symlink in the last component (true for directories we enter, false for outputs, which report symlinks as such). */
  followLast: boolean;
  /** Create missing directories on the way (mode 0777, so the unprivileged action user can write into them), the last one included. */
  create?: boolean;
}

/** As Linux's MAXSYMLINKS: more links than this on one path is a loop. */
const MAX_LINKS = 40;

/**
 * Resolves a relative path inside an action's input root the way the kernel
 * would inside the sandbox (where the root is mounted at SANDBOX_ROOT), but
 * from the host, one component at a time with lstat, so that no symlink is
 * ever followed by the kernel on the host. The executor runs as root: an
 * input symlink `e -> /etc` must never turn an output `e/shadow` into the
 * host's /etc/shadow. Symlinks that stay inside the root are followed like the
 * action itself would see them (relative ones, and absolute ones under
 * SANDBOX_ROOT); any other leads outside and is reported, never entered.
 *
 * Only sound while nothing else changes the tree: the executor calls it before
 * the action starts and after its whole process tree has died.
 */
export async function resolveInRoot(root: string, rel: string, opts: ResolveOptions): Promise<RootPath> {
  let todo = split(rel);
  const at: string[] = []; // the physical path reached so far, relative to the root
  let links = 0;
  while (todo.length > 0) {
    const name = todo[0]!;
    todo = todo.slice(1);
    if (name === '..') {
      if (at.length === 0) return { kind: 'outside', why: `"${rel}" climbs above the input root` };
      at.pop();
      continue;
    }
    const host = path.join(root, ...at, name);
    const last = todo.length === 0;
    let st: Stats;
    try {
      st = await lstat(host);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code !== 'ENOENT') {
        if (code === 'ENOTDIR') return { kind: 'missing' };
        throw e;
      }
      if (!opts.create) return { kind: 'missing' };
      await mkdir(host);
      await chmod(host, 0o777); // mkdir's mode is masked by the umask
      at.push(name);
      continue;
    }
    if (st.isSymbolicLink() && (!last || opts.followLast)) {
      if (++links > MAX_LINKS) return { kind: 'outside', why: `too many symlinks resolving "${rel}"` };
      const target = await readlink(host);
      if (path.posix.isAbsolute(target)) {
        const inside = path.posix.relative(SANDBOX_ROOT, path.posix.normalize(target));
        if (inside === '..' || inside.startsWith('../') || path.posix.isAbsolute(inside)) {
          return { kind: 'outside', why: `"${path.posix.join(...at, name)}" is a symlink to ${target}, outside the input root` };
        }
        at.length = 0;
        todo = [...split(inside), ...todo];
      } else {
        todo = [...split(target), ...todo];
      }
      continue;
    }
    if (!last && !st.isDirectory()) return { kind: 'missing' };
    at.push(name);
  }
  return { kind: 'inside', host: path.join(root, ...at), rel: at.join('/') };
}

function split(p: string): string[] {
  return p.split('/').filter((c) => c !== '' && c !== '.');
}
