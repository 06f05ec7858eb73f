import { type Dirent, readdirSync, renameSync, rmSync } from 'node:fs';
import path from 'node:path';
import { DirLock, lastUsed, lockHolder } from '../common/dir-lock.js';
import type { Logger } from '../common/logger.js';

const DAY_MS = 24 * 60 * 60 * 1000;

/** Where a directory being removed is moved first, so that a worker starting under its old name gets a fresh one. */
const REMOVING = '.removing-';

/**
 * Claims a worker's data directory (its cache and scratch space) for the
 * process's life. Two workers on one directory would empty each other's
 * scratch space at start and evict each other's cache entries, so the
 * second one is refused: it is usually the same worker started twice, and
 * a different worker on the same host needs a name of its own anyway, or
 * the scheduler would take the second for the first reconnecting.
 */
export function claimWorkerDir(dataDir: string): DirLock {
  return DirLock.acquire(dataDir, {
    role: 'worker data directory',
    what: 'repr worker',
    fix: 'stop it, or give this one another --name (each name has its own directory, $REPR_DATA_DIR/workers/NAME) or --data-dir',
    choose: 'give --data-dir (or $REPR_DATA_DIR) a writable directory',
  });
}

export interface StaleSweep {
  /** The directory holding one directory per worker name: $REPR_DATA_DIR/workers. */
  parent: string;
  /** This worker's own directory, never removed. */
  own: string;
  /** A directory unused this long is removed. */
  maxAgeMs: number;
  now: number;
  log: Logger;
}

/**
 * Removes the directories of workers that have not run on this host for
 * `maxAgeMs` (each holds a cache of up to cache.limitBytes), so renamed or
 * retired workers do not fill the disk. A locked directory is never
 * touched; one is locked by this sweep before it goes, so a worker starting
 * under that name meanwhile either waits its turn or gets a fresh directory.
 * Returns the directories removed.
 */
export function removeStaleWorkerDirs(s: StaleSweep): string[] {
  let entries: Dirent[];
  try {
    entries = readdirSync(s.parent, { withFileTypes: true });
  } catch {
    return []; // no other worker has run here
  }
  const removed: string[] = [];
  for (const e of entries) {
    const dir = path.join(s.parent, e.name);
    if (!e.isDirectory() || path.resolve(dir) === path.resolve(s.own)) continue;
    try {
      if (e.name.startsWith(REMOVING)) {
        // Left by a sweep that was interrupted; nobody can be using it.
        rmSync(dir, { recursive: true, force: true });
        continue;
      }
      const used = lastUsed(dir);
      if (s.now - used < s.maxAgeMs || lockHolder(dir) !== undefined) continue;
      const lock = claimWorkerDir(dir);
      const doomed = path.join(s.parent, `${REMOVING}${e.name}-${process.pid}`);
      try {
        renameSync(dir, doomed);
      } finally {
        lock.release();
      }
      rmSync(doomed, { recursive: true, force: true });
      removed.push(dir);
      s.log.info(
        { dir, lastUsed: new Date(used).toISOString(), unusedDays: Math.floor((s.now - used) / DAY_MS) },
        'removed the directory of a worker that has not run here for a long time (staleDays)',
      );
    } catch (err) {
      // Claimed by a worker starting right now, or not ours to remove: leave it.
      s.log.debug({ dir, err }, 'left a worker directory alone');
    }
  }
  return removed;
}
