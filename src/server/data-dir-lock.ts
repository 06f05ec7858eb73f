import { closeSync, mkdirSync, openSync, readFileSync, unlinkSync, writeSync } from 'node:fs';
import path from 'node:path';
import { Code, failedPrecondition, ReprError } from '../common/errors.js';

/**
 * An exclusive claim on a data directory, held for a server's life. Two
 * servers on one directory would each keep an LRU index of the same files
 * and remove each other's uploads in progress; the second one must refuse.
 *
 * A pid file made with O_EXCL, as PostgreSQL's postmaster.pid: the file says
 * who holds it, and a file left by a process that is gone (a crash, a
 * SIGKILL) is taken over. A pid that is alive but no longer a repr process
 * (reused after a reboot) does not hold the directory either.
 */
export class DataDirLock {
  private released = false;

  private constructor(readonly file: string) {}

  static acquire(dataDir: string): DataDirLock {
    try {
      mkdirSync(dataDir, { recursive: true });
    } catch (e) {
      throw unusable(dataDir, e);
    }
    const file = path.join(dataDir, 'repr.lock');
    for (let attempt = 0; attempt < 2; attempt++) {
      let fd: number;
      try {
        fd = openSync(file, 'wx', 0o644);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw unusable(dataDir, e);
        const holder = readHolder(file);
        if (holder !== undefined && holds(holder)) {
          throw failedPrecondition(
            `data directory ${dataDir} is in use by another repr server (pid ${holder}; lock file ${file}): stop it, or give this one another --data-dir`,
          );
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
      return new DataDirLock(file);
    }
    throw failedPrecondition(`data directory ${dataDir} is being claimed by another repr server starting at the same time (lock file ${file})`);
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

/** Why a data directory cannot be made or written, in one line naming the flag that picks another. */
function unusable(dataDir: string, e: unknown): ReprError {
  const code = (e as NodeJS.ErrnoException).code;
  const why =
    code === 'EEXIST' || code === 'ENOTDIR'
      ? 'a file is in the way (it must be a directory)'
      : code === 'EACCES' || code === 'EPERM' || code === 'EROFS'
        ? `this user (uid ${process.getuid?.() ?? '?'}) cannot write there`
        : (e as Error).message;
  return new ReprError(Code.FAILED_PRECONDITION, `data directory ${dataDir} is not usable: ${why}; give --data-dir (or $REPR_DATA_DIR) a writable directory`, {
    cause: e,
  });
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
    // EPERM: alive, but another user's; it may well be a repr server.
    if ((e as NodeJS.ErrnoException).code !== 'EPERM') return false;
  }
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes('repr');
  } catch {
    return true; // alive and unreadable: assume it holds the directory rather than share it
  }
}
