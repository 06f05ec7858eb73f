import { constants, type Stats } from 'node:fs';
import { lstat, open, readdir, readlink, stat } from 'node:fs/promises';
import path from 'node:path';

const OPEN_DIR = constants.O_RDONLY | constants.O_DIRECTORY | constants.O_NOFOLLOW;

/** What an action has stored on disk so far. */
export interface WriteUsage {
  /** Allocated bytes (st_blocks), hard links counted once. */
  bytes: number;
  /** Files, directories and symlinks. */
  entries: number;
  /** Apparent size of the largest regular file. */
  largestFile: number;
}

/**
 * How far before the action's start a directory change still counts as the
 * action's: the kernel stamps ctime from a clock that can lag by a tick.
 */
const CLOCK_SLACK_MS = 100;

/**
 * The disk use of entries owned by `uid` under `dirs`, walking only where the
 * action can have written since `sinceMs`.
 *
 * The action runs as `uid`, cannot chown, and finds no file it may write
 * (inputs are read-only, root-owned links): every byte it stores sits in an
 * entry it created, and creating, renaming or removing an entry moves the
 * ctime of the directory holding it, which no one without privilege can set
 * back. So entries are examined only in directories changed since the start;
 * elsewhere only subdirectories are followed. A large input tree then costs an
 * lstat per directory (and a readdir per directory that has subdirectories)
 * rather than an lstat per file.
 */
export async function measureWrites(dirs: string[], uid: number, sinceMs: number): Promise<WriteUsage> {
  const usage: WriteUsage = { bytes: 0, entries: 0, largestFile: 0 };
  const seen = new Set<string>();
  const since = sinceMs - CLOCK_SLACK_MS;
  const count = (s: Stats) => {
    if (s.uid !== uid) return;
    if (s.nlink > 1 && !s.isDirectory()) {
      const key = `${s.dev}:${s.ino}`;
      if (seen.has(key)) return;
      seen.add(key);
    }
    usage.entries++;
    usage.bytes += s.blocks * 512;
    if (s.isFile() && s.size > usage.largestFile) usage.largestFile = s.size;
  };
  // The action can swap a directory for a symlink (to /, say) while we walk,
  // and we walk as root: every step is taken from the directory we opened
  // (through its /proc/self/fd link) and the last one never follows a symlink.
  const visit = async (at: string): Promise<void> => {
    const dir = await open(at, OPEN_DIR).catch(() => undefined);
    if (!dir) return; // removed, or no longer a directory
    try {
      const st = await dir.stat();
      const changed = st.ctimeMs >= since;
      // A directory's link count is 2 plus its subdirectories (the convention
      // find's leaf optimisation relies on; filesystems that do not keep it
      // report 1): an unchanged one at 2 holds nothing to visit.
      if (!changed && st.nlink === 2) return;
      const self = `/proc/self/fd/${dir.fd}`;
      const names = await readdir(self, { withFileTypes: true }).catch(() => []);
      const subdirs: string[] = [];
      await Promise.all(
        names.map(async (e) => {
          if (!changed && !e.isDirectory()) return;
          const p = `${self}/${e.name}`;
          const s = await lstat(p).catch(() => undefined);
          if (!s) return;
          if (changed) count(s);
          if (s.isDirectory() && (changed || s.nlink !== 2 || s.ctimeMs >= since)) subdirs.push(p);
        }),
      );
      // One subdirectory at a time keeps the open descriptors to the tree's depth.
      for (const d of subdirs) await visit(d);
    } finally {
      await dir.close();
    }
  };
  for (const d of dirs) await visit(d);
  return usage;
}

/**
 * Bytes held by files that `uid` deleted while keeping them open: no walk
 * finds them, yet they fill the disk until the last process closes them.
 */
export async function openDeletedBytes(pids: number[], uid: number): Promise<number> {
  let bytes = 0;
  const seen = new Set<string>();
  await Promise.all(
    pids.map(async (pid) => {
      const fdDir = `/proc/${pid}/fd`;
      const fds = await readdir(fdDir).catch(() => [] as string[]);
      await Promise.all(
        fds.map(async (fd) => {
          const link = await readlink(path.join(fdDir, fd)).catch(() => '');
          if (!link.endsWith(' (deleted)')) return;
          const s = await stat(path.join(fdDir, fd)).catch(() => undefined);
          if (!s?.isFile() || s.nlink !== 0 || s.uid !== uid) return;
          const key = `${s.dev}:${s.ino}`;
          if (seen.has(key)) return;
          seen.add(key);
          bytes += s.blocks * 512;
        }),
      );
    }),
  );
  return bytes;
}
