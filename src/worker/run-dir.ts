import { spawnSync } from 'node:child_process';
import { rmSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import type { Clock } from '../common/clock.js';
import type { Logger } from '../common/logger.js';
import { FuseMount, mountsUnderSync } from '../vfs/fuse-mount.js';
import { RunOverlay } from '../vfs/overlay.js';
import { removeScratchDir, scratchDirPath } from './command-core.js';

/** Whether overlayfs can be mounted over a FUSE mount here, as far as one attempt has shown. */
export interface OverlaySupport {
  unavailable: boolean;
}

/**
 * A run's directory on this machine: its FUSE mount at `mnt`, with no tree
 * until the run configures it, and the overlay over it where it can be
 * mounted; `scratch` and `fetched` beside them.
 */
export interface RunDir {
  dir: string;
  mnt: string;
  mount: FuseMount;
  overlay?: RunOverlay;
}

export interface RunDirOptions {
  workDir: string;
  clock: Clock;
  log: Logger;
  /** Owner of every node of the mount: the sandbox user. */
  uid: number;
  gid: number;
  /** See RunExecutorOptions.writes. */
  writes: 'overlay' | 'fuse';
  overlaySupport: OverlaySupport;
}

/** Makes a run's directory and mounts its view; on failure nothing of it is left. */
export async function makeRunDir(o: RunDirOptions, dir = scratchDirPath(o.workDir, 'run-', o.clock)): Promise<RunDir> {
  const mnt = path.join(dir, 'mnt');
  let mount: FuseMount | undefined;
  try {
    for (const d of ['mnt', 'scratch', 'fetched']) await mkdir(path.join(dir, d), { recursive: true });
    mount = await FuseMount.prepare({ mountpoint: mnt, scratchDir: path.join(dir, 'scratch'), uid: o.uid, gid: o.gid, log: o.log });
    // Named before it is mounted: a helper that ends while the mount command runs still removes it.
    if (o.writes === 'overlay' && !o.overlaySupport.unavailable) mount.stacked(path.join(dir, 'merged'));
    const { overlay } = await overlayOver(mnt, dir, o);
    return { dir, mnt, mount, ...(overlay ? { overlay } : {}) };
  } catch (e) {
    await mount?.close();
    await removeScratchDir(dir, o.log, { mayHoldMounts: true });
    throw e;
  }
}

/**
 * Empties a machine's work directory as it starts. A process killed while a
 * run was mounted, or while a directory waited made ahead, can leave an
 * overlay there whose FUSE layer is gone: a recursive delete fails on it
 * (EBUSY), so the mounts are detached first, innermost first.
 */
export function clearWorkDir(workDir: string): void {
  for (const m of mountsUnderSync(workDir).sort().reverse()) spawnSync('umount', ['-l', m], { stdio: 'ignore' });
  rmSync(workDir, { recursive: true, force: true });
}

/** Unmounts (the overlay first: it holds the FUSE mount as its lower layer) and removes the directory. */
export async function removeRunDir(rd: RunDir, log: Logger): Promise<void> {
  await rd.overlay?.unmount();
  await rd.mount.close();
  await removeScratchDir(rd.dir, log, { mayHoldMounts: true });
}

/**
 * The writable view of the run: an overlay whose upper layer takes the
 * command's writes at disk speed. Where overlayfs cannot be mounted (no
 * privileges, an old kernel) the FUSE mount itself takes the writes,
 * copy-on-write into its scratch directory: slower, same result.
 */
async function overlayOver(mnt: string, dir: string, o: RunDirOptions): Promise<{ overlay?: RunOverlay }> {
  if (o.writes === 'fuse' || o.overlaySupport.unavailable) return {};
  try {
    return { overlay: await RunOverlay.mount(mnt, dir) };
  } catch (e) {
    o.overlaySupport.unavailable = true;
    o.log.warn({ err: e }, 'cannot mount overlayfs over the FUSE mount; runs write through FUSE instead (slower)');
    return {};
  }
}

/**
 * One run directory made ahead, shared by the run executors of a machine:
 * making the directory, mounting FUSE and the overlay are most of a short
 * run's setup (a third of a trivial compile's time on the executor), and
 * need nothing of the run. It is made after a run has answered, while its
 * client writes the changes back and starts its next command, and taken by
 * the next run to start. Each serves one run only and is removed with it, so
 * no run sees another's tree, answers or kernel caches. Only one waits at a
 * time: a machine holds at most one idle mount and its helper process.
 */
export class RunDirsAhead {
  private ready?: RunDir;
  private making?: Promise<void>;
  private closed = false;

  constructor(private readonly o: RunDirOptions) {}

  /** The directory made ahead, if one is ready and its helper still there; the caller owns it from here. */
  take(): RunDir | undefined {
    const rd = this.ready;
    this.ready = undefined;
    if (rd && !rd.mount.usable) {
      // Its helper died while it waited.
      void removeRunDir(rd, this.o.log);
      return undefined;
    }
    return rd;
  }

  /** Starts making the next one, unless one is ready or on its way. */
  refill(): void {
    if (this.closed || this.ready || this.making) return;
    this.making = makeRunDir(this.o)
      .then(
        async (rd) => {
          if (this.closed) await removeRunDir(rd, this.o.log);
          else this.ready = rd;
        },
        (e: unknown) => this.o.log.warn({ err: e }, 'could not prepare a run directory ahead; the next run makes its own'),
      )
      .finally(() => (this.making = undefined));
  }

  /** Removes the one waiting; none is made after. */
  async close(): Promise<void> {
    this.closed = true;
    await this.making;
    const rd = this.ready;
    this.ready = undefined;
    if (rd) await removeRunDir(rd, this.o.log);
  }
}
