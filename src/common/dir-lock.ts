import { closeSync, mkdirSync, openSync, readFileSync, statSync, unlinkSync, utimesSync, writeSync } from 'node:fs';
import path from 'node:path';
import { Code, failedPrecondition, ReprError } from './errors.js';

/** The lock file's name inside a locked directory. */
export const LOCK_FILE = 'repr.lock';

/** Who is refused and how they fix it, for the one line a second claimant prints. */
export interface LockOwner {
  /** What the directory is to its holder: 'data directory'. */
  role: string;
  /** 'repr server', 'repr worker'. */
  what: string;
  /** What the second one should do instead: 'stop it, or give this one another --data-dir'. */
  fix: string;
  /** How to pick a directory that works, when this one cannot be made or written: 'give --data-dir … a writable directory'. */
  choose: string;
}

/**
 * An exclusive claim on a directory, held for a process's life: a server's
 * data directory, a worker's cache. Two servers on one directory would each
 * keep an LRU index of the same files and remove each other's uploads in
 * progress; two workers would empty each other's scratch space at start.
 *
 * A pid file made with O_EXCL, as PostgreSQL's postmaster.pid: the file says
 * who holds it, and a file left by a process that is gone (a crash, a
 * SIGKILL) is taken over. A pid that is alive but no longer a repr process
 * (reused after a reboot) does not hold the directory either.
 */
export class DirLock {
  private released = false;

  private constructor(readonly file: string) {}

  static acquire(dir: string, owner: LockOwner): DirLock {
    try {
      mkdirSync(dir, { recursive: true });
    } catch (e) {
      throw unusable(dir, owner, e);
    }
    const file = path.join(dir, LOCK_FILE);
    for (let attempt = 0; attempt < 2; attempt++) {
      let fd: number;
      try {
        fd = openSync(file, 'wx', 0o644);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw unusable(dir, owner, e);
        const holder = lockHolder(dir);
        if (holder !== undefined) {
          throw failedPrecondition(`${owner.role} ${dir} is in use by another ${owner.what} (pid ${holder}; lock file ${file}): ${owner.fix}`);
        }
        // Left by a process that is gone: take it over.
        try {
          unlinkSync(file);
        } catch {
          /* another starter took it over first; the next open says who won */
        }
        continue;
      }
      try {
        writeSync(fd, `${process.pid}\n`);
      } finally {
        closeSync(fd);
      }
      return new DirLock(file);
    }
    throw failedPrecondition(`${owner.role} ${dir} is being claimed by another ${owner.what} starting at the same time (lock file ${file})`);
  }

  /**
   * Marks the directory as in use now. A holder killed with SIGKILL leaves
   * its lock behind with the time it started; touching it now and then lets
   * `lastUsed` tell a cache used yesterday from one abandoned a month ago.
   */
  touch(now = new Date()): void {
    if (this.released) return;
    try {
      utimesSync(this.file, now, now);
    } catch {
      /* removed by hand; release() copes with that too */
    }
  }

  /** Gives the directory up; only if the file is still ours (an operator may have removed it by hand). */
  release(): void {
    if (this.released) return;
    this.released = true;
    if (readHolder(this.file) === process.pid) {
      try {
        unlinkSync(this.file);
      } catch {
        /* already gone */
      }
    }
  }
}

/** The pid of the live repr process holding `dir`, or undefined when nobody does. */
export function lockHolder(dir: string): number | undefined {
  const holder = readHolder(path.join(dir, LOCK_FILE));
  return holder !== undefined && holds(holder) ? holder : undefined;
}

/**
 * When a directory was last in use, in ms since the epoch: its own mtime
 * (entries come and go while it is used, and releasing the lock removes one)
 * or its lock file's (touched while held), whichever is later.
 */
export function lastUsed(dir: string): number {
  const times = [statSync(dir).mtimeMs];
  try {
    times.push(statSync(path.join(dir, LOCK_FILE)).mtimeMs);
  } catch {
    /* not locked */
  }
  return Math.max(...times);
}

function readHolder(file: string): number | undefined {
  try {
    const pid = Number.parseInt(readFileSync(file, 'utf8').trim(), 10);
    return Number.isSafeInteger(pid) && pid > 0 ? pid : undefined;
  } catch {
    return undefined;
  }
}

/** Whether `pid` is a live repr process (this one included: a server in this process holds it). */
function holds(pid: number): boolean {
  if (pid === process.pid) return true;
  try {
    process.kill(pid, 0);
  } catch (e) {
    // EPERM: alive, but another user's; it may well be a repr process.
    if ((e as NodeJS.ErrnoException).code !== 'EPERM') return false;
  }
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes('repr');
  } catch {
    return true; // alive and unreadable: assume it holds the directory rather than share it
  }
}

/** Why a directory cannot be made or written, in one line naming the flag that picks another. */
function unusable(dir: string, owner: LockOwner, e: unknown): ReprError {
  const code = (e as NodeJS.ErrnoException).code;
  const why =
    code === 'EEXIST' || code === 'ENOTDIR'
      ? 'a file is in the way (it must be a directory)'
      : code === 'EACCES' || code === 'EPERM' || code === 'EROFS'
        ? `this user (uid ${process.getuid?.() ?? '?'}) cannot write there`
        : (e as Error).message;
  return new ReprError(Code.FAILED_PRECONDITION, `${owner.role} ${dir} is not usable: ${why}; ${owner.choose}`, { cause: e });
}
