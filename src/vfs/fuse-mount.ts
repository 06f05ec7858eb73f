import { execFile, fork, type ChildProcess } from 'node:child_process';
import { readFileSync, realpathSync } from 'node:fs';
import { readFile, realpath } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { failedPrecondition, internal, invalidArgument } from '../common/errors.js';
import type { FromHelper, FuseMountOptions, FusePrepareOptions, FuseRunOptions, ToHelper } from './fuse-protocol.js';

export type { FuseMountOptions, FusePrepareOptions, FuseRunOptions } from './fuse-protocol.js';
import type { VAccessReport, VChange, VNode } from './vfs.js';

const execFileP = promisify(execFile);
const HELPER = fileURLToPath(new URL('./fuse-helper.js', import.meta.url));
/** How long the helper gets to unmount and exit by itself before it is killed. */
const CLOSE_GRACE_MS = 3000;

/** Helpers waiting for a mount, idle and unreferenced (they do not keep this process alive). */
const idle: ChildProcess[] = [];
/** Kept at most: one forked ahead and one back from a mount is all a machine's next runs need. */
const MAX_IDLE_HELPERS = 2;

function forkHelper(): ChildProcess {
  // No inherited execArgv: a debugger or test-runner flag of this process must not reach the helper.
  const child = fork(HELPER, [], { serialization: 'advanced', stdio: ['ignore', 'ignore', 'pipe', 'ipc'], execArgv: [] });
  child.on('error', () => undefined);
  return child;
}

function alive(child: ChildProcess): boolean {
  return child.exitCode === null && child.signalCode === null && child.connected;
}

function setRef(child: ChildProcess, ref: boolean): void {
  if (ref) child.ref();
  else child.unref();
  const handles = [child.channel, child.stderr] as ({ ref?: () => void; unref?: () => void } | null | undefined)[];
  for (const h of handles) (ref ? h?.ref : h?.unref)?.call(h);
}

/**
 * A helper process for a new mount. Starting Node costs ~100 ms (and more
 * CPU than the command of a short run), so helpers serve one mount after
 * another, and when none is left idle the next one is forked as soon as
 * this one is taken.
 */
function takeHelper(): ChildProcess {
  let child: ChildProcess | undefined;
  while ((child = idle.pop()) && !alive(child)) child.kill('SIGKILL');
  child ??= forkHelper();
  setRef(child, true);
  if (idle.length === 0) {
    const next = forkHelper();
    setRef(next, false);
    idle.push(next);
  }
  return child;
}

/** A helper back from a mount it closed cleanly, for the next one; beyond the few kept idle, it exits. */
function giveBack(child: ChildProcess): void {
  if (!alive(child) || idle.length >= MAX_IDLE_HELPERS) {
    child.kill('SIGTERM');
    return;
  }
  setRef(child, false);
  idle.push(child);
}

/**
 * The worker's handle on a run's FUSE mount. The mount is served by a child
 * process (fuse-helper) so that nothing in this process can deadlock on it;
 * this class answers the helper's questions with the caller's query/fetch and
 * cleans the mount up however the helper ends.
 */
export class FuseMount {
  private readonly calls = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  private seq = 0;
  private exited = false;
  private readonly exit: Promise<void>;
  private closing?: Promise<void>;
  private stderrTail = '';
  /** Handed back for another mount: no longer ours to kill or listen to. */
  private released = false;
  private onClosed?: () => void;
  private onMount?: (error?: string) => void;
  private readonly detach: () => void;
  /** Set once the helper reported its mount: only then is a mount at the mountpoint ours to remove. */
  private mounted = false;
  /** The run it serves, once configured. */
  private run?: FuseRunOptions;

  private constructor(
    private readonly child: ChildProcess,
    private readonly opts: FusePrepareOptions,
    /** As /proc/mounts shows it (symlinks resolved before mounting). */
    private readonly realMountpoint: string,
  ) {
    let onExit!: (code: number | null, signal: NodeJS.Signals | null) => void;
    this.exit = new Promise((resolve) => {
      onExit = (code, signal) => {
        this.exited = true;
        const err = internal(`FUSE helper exited (${signal ?? `code ${code}`})${this.stderrTail ? `: ${this.stderrTail.trim()}` : ''}`);
        if (!this.closing && this.mounted) opts.log?.warn({ err }, 'FUSE helper died; close() will detach its mount');
        for (const c of this.calls.values()) c.reject(err);
        this.calls.clear();
        resolve();
      };
    });
    const onStderr = (s: string) => {
      this.stderrTail = (this.stderrTail + s).slice(-2000);
      opts.log?.warn({ helper: s.trimEnd() }, 'FUSE helper stderr');
    };
    const onMessage = (m: FromHelper) => this.onMessage(m);
    child.once('exit', onExit);
    child.stderr?.setEncoding('utf8').on('data', onStderr);
    child.on('message', onMessage);
    this.detach = () => {
      child.off('exit', onExit);
      child.stderr?.off('data', onStderr);
      child.off('message', onMessage);
    };
  }

  /** Forks the helper and resolves once the tree is mounted. */
  static async start(opts: FuseMountOptions): Promise<FuseMount> {
    const mount = await FuseMount.prepare(opts);
    mount.configure(opts);
    return mount;
  }

  /**
   * Mounts an empty tree ahead of its run: the mount and (over it) the
   * overlay are most of a short run's setup, and can be done before the run
   * is known. Until configure() every FUSE op waits. A prepared mount serves
   * one run only; nothing of one run can be seen by another.
   */
  static async prepare(opts: FusePrepareOptions): Promise<FuseMount> {
    // Resolved now, while it is still a plain directory: afterwards it is the mount's root.
    const real = await realpath(opts.mountpoint).catch((err: Error) => {
      throw invalidArgument(`FUSE mountpoint ${opts.mountpoint}: ${err.message}`);
    });
    if (await isMounted(real)) throw failedPrecondition(`FUSE mountpoint ${real} is already a mount point`);
    const child = takeHelper();
    const mount = new FuseMount(child, opts, real);
    const init: ToHelper = {
      t: 'init',
      mountpoint: real,
      scratchDir: opts.scratchDir,
      uid: opts.uid,
      gid: opts.gid,
    };
    const ready = new Promise<void>((resolve, reject) => {
      mount.onMount = (error) => (error === undefined ? resolve() : reject(internal(`FUSE mount at ${real} failed: ${error}`)));
      void mount.exit.then(() => reject(internal(`FUSE helper exited before mounting${mount.stderrTail ? `: ${mount.stderrTail.trim()}` : ''}`)));
    });
    child.send(init);
    try {
      await ready;
    } catch (err) {
      await mount.close();
      throw err;
    }
    opts.log?.debug({ mountpoint: real, pid: child.pid }, 'FUSE mounted');
    return mount;
  }

  /** Gives the mount its run's tree; once only. */
  configure(run: FuseRunOptions): void {
    if (this.run) throw internal('a FUSE mount serves one run only');
    this.run = run;
    this.sendToHelper({ t: 'configure', roots: run.roots, mappings: run.mappings });
  }

  /** Names a mount put over this one, which the helper removes first should it end without close() (its parent died). */
  stacked(path: string): void {
    this.sendToHelper({ t: 'stacked', path });
  }

  /** Whether the helper is still there to serve a run (a prepared mount may have lost it while it waited). */
  get usable(): boolean {
    return this.mounted && !this.exited && !this.closing && this.child.connected;
  }

  /** The helper's process id, for diagnostics (and tests that kill it). */
  get pid(): number | undefined {
    return this.child.pid;
  }

  /** What the run created, changed or removed under the roots. */
  changes(): Promise<VChange[]> {
    return this.call('changes') as Promise<VChange[]>;
  }

  report(): Promise<VAccessReport> {
    return this.call('report') as Promise<VAccessReport>;
  }

  /**
   * Unmounts and stops the helper. Idempotent and never throws: a busy or
   * orphaned mount (helper killed) is detached lazily instead.
   */
  close(): Promise<void> {
    this.closing ??= (async () => {
      let reusable = false;
      if (!this.exited) {
        const closed = new Promise<boolean>((resolve) => (this.onClosed = () => resolve(true)));
        this.sendToHelper({ t: 'close' });
        const timer = setTimeout(() => this.child.kill('SIGKILL'), CLOSE_GRACE_MS);
        reusable = await Promise.race([closed, this.exit.then(() => false)]);
        clearTimeout(timer);
      }
      const left = this.mounted && (await isMounted(this.realMountpoint));
      if (reusable && !left) {
        // Unmounted cleanly: the helper serves the next mount, which saves that mount a Node start.
        this.released = true;
        this.detach();
        giveBack(this.child);
      } else if (reusable) this.child.kill('SIGKILL');
      if (left) await this.forceUnmount();
    })().catch((err: unknown) => this.opts.log?.warn({ err }, 'FUSE close failed'));
    return this.closing;
  }

  /**
   * Tears the mount down at once, for a run past its deadline: killing the
   * helper closes its /dev/fuse descriptor, which aborts the connection, so
   * every request still pending fails and no process stays blocked on one
   * (a process waiting on FUSE ignores even SIGKILL). Never throws.
   */
  abort(): Promise<void> {
    if (!this.exited && !this.released) this.child.kill('SIGKILL');
    return this.close();
  }

  private async forceUnmount(): Promise<void> {
    for (const [cmd, args] of [
      ['fusermount', ['-u', '-z', this.realMountpoint]],
      ['umount', ['-l', this.realMountpoint]],
    ] as const) {
      try {
        await execFileP(cmd, args);
        if (!(await isMounted(this.realMountpoint))) return;
      } catch (err) {
        this.opts.log?.debug({ err, cmd }, 'unmount attempt failed');
      }
    }
    this.opts.log?.warn({ mountpoint: this.realMountpoint }, 'FUSE mount could not be removed');
  }

  private call(op: 'changes' | 'report'): Promise<unknown> {
    if (this.exited || this.closing) return Promise.reject(internal(`FUSE mount is ${this.exited ? 'gone' : 'closing'}`));
    return new Promise((resolve, reject) => {
      const id = ++this.seq;
      this.calls.set(id, { resolve, reject });
      this.sendToHelper({ t: 'call', id, op });
    });
  }

  private onMessage(m: FromHelper): void {
    switch (m.t) {
      case 'query':
        this.answer(m.id, () => this.run!.query(m.path, m.list));
        break;
      case 'fetch':
        this.answer(m.id, () => this.run!.fetch(m.hash, m.size));
        break;
      case 'mounted':
        this.mounted = true;
        this.onMount?.();
        break;
      case 'mount-failed':
        this.onMount?.(m.error);
        break;
      case 'closed':
        this.onClosed?.();
        break;
      case 'result': {
        const c = this.calls.get(m.id);
        this.calls.delete(m.id);
        c?.resolve(m.value);
        break;
      }
      case 'log':
        this.opts.log?.[m.level]({ mountpoint: this.realMountpoint }, m.msg);
        break;
    }
  }

  private answer(id: number, f: () => Promise<VNode | string>): void {
    let p: Promise<VNode | string>;
    try {
      p = f();
    } catch (err) {
      p = Promise.reject(err);
    }
    p.then(
      (value) => this.sendToHelper({ t: 'answer', id, ok: true, value }),
      (err: unknown) => this.sendToHelper({ t: 'answer', id, ok: false, error: err instanceof Error ? err.message : String(err) }),
    );
  }

  private sendToHelper(m: ToHelper): void {
    // The helper may die between a question and its answer; its exit handler reports that.
    if (this.child.connected) this.child.send(m, (err) => err && this.opts.log?.debug({ err }, 'IPC send to FUSE helper failed'));
  }
}

/** Mount points in this process's namespace, from /proc/self/mounts (never touching the mounts themselves). */
async function mountPoints(): Promise<string[]> {
  return parseMounts(await readFile('/proc/self/mounts', 'utf8'));
}

function parseMounts(text: string): string[] {
  return text
    .split('\n')
    .map((line) => line.split(' ')[1])
    .filter((f): f is string => f !== undefined)
    .map((f) => f.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8))));
}

/** Whether a path is a mount point now. */
async function isMounted(mountpoint: string): Promise<boolean> {
  return (await mountPoints()).includes(mountpoint);
}

/** As mountsUnder, for a process starting up. */
export function mountsUnderSync(dir: string): string[] {
  let real = dir;
  try {
    real = realpathSync(dir);
  } catch {
    /* not there: nothing is mounted under it */
  }
  return parseMounts(readFileSync('/proc/self/mounts', 'utf8')).filter((m) => m === real || m.startsWith(`${real}/`));
}

/** Mount points at or below `dir` (as /proc shows them: symlinks in `dir` resolved). */
export async function mountsUnder(dir: string): Promise<string[]> {
  const real = await realpath(dir).catch(() => dir);
  return (await mountPoints()).filter((m) => m === real || m.startsWith(`${real}/`));
}
