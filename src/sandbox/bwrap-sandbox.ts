import { spawn, spawnSync } from 'node:child_process';
import { closeSync, existsSync, openSync, write, writeSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import type { Readable, Writable } from 'node:stream';
import { promisify } from 'node:util';
import { failedPrecondition } from '../common/errors.js';
import { createActionCgroup, detectCgroups, type ActionCgroup } from './cgroups.js';
import { SANDBOX_ROOT, type LimitExceeded, type Sandbox, type SandboxLimit, type SandboxResult, type SandboxSpec } from './sandbox.js';
import { isSeccompArch, seccompProgram } from './seccomp.js';
import { measureWrites, openDeletedBytes } from './write-usage.js';

const MiB = 1024 * 1024;
const GiB = 1024 * MiB;

export interface BwrapSandboxOptions {
  /** Host paths bound read-only at the same place: the toolchain. Missing ones are skipped. */
  readOnlyPaths?: string[];
  /** Unprivileged uid/gid the action runs as, so it cannot modify hard-linked CAS files. */
  uid?: number;
  gid?: number;
  /** Default pid limit when the action does not ask for one. */
  defaultPids?: number;
  /** Memory limit of an action that asks for none; 0 = none. Default: 4 GiB, or all memory on a smaller machine. */
  defaultMemoryBytes?: number;
  /** Most bytes of stdout, and of stderr, written to the spec's files; beyond it the action is killed. 0 = no cap. Default 64 MiB each. */
  maxStdoutBytes?: number;
  maxStderrBytes?: number;
  /** Most bytes an action may store in its writable directories, and the size of any one file it writes. 0 = no cap. Default 16 GiB. */
  maxWriteBytes?: number;
  /** Most files, directories and symlinks it may create there (inodes fill a disk too). 0 = no cap. Default 1,000,000. */
  maxWriteEntries?: number;
  /** How often a running action's writes are measured; slower where a measurement is slow. Default 500 ms. */
  writeCheckIntervalMs?: number;
  /** Size of the action's /tmp, a tmpfs charged to its memory. Default: its memory limit. */
  tmpBytes?: number;
  /** Refuse the syscalls listed in seccomp.ts. Default true. */
  seccomp?: boolean;
  /** Let actions use ptrace (debuggers, LeakSanitizer) despite the filter. Default false. */
  allowPtrace?: boolean;
  /**
   * Also let the kernel refuse user namespaces to the action (a second,
   * unprivileged bwrap with --disable-userns), besides the filter refusing the
   * syscalls. Costs about half again the spawn time. Default: only when the
   * filter is off, so that actions never get user namespaces.
   */
  disableUserns?: boolean;
}

export const DEFAULT_READ_ONLY_PATHS = [
  '/usr',
  '/bin',
  '/sbin',
  '/lib',
  '/lib32',
  '/lib64',
  '/libx32',
  '/etc/alternatives',
  '/etc/ld.so.cache',
  '/etc/ld.so.conf',
  '/etc/ld.so.conf.d',
  '/etc/localtime',
  '/etc/passwd',
  '/etc/group',
  '/etc/nsswitch.conf',
];

/**
 * Linux isolation with bubblewrap (Debian's `bubblewrap`): new mount, pid,
 * network, ipc and uts namespaces; only the toolchain directories and the
 * input root are visible; the action runs as an unprivileged user with no
 * capabilities, under a seccomp filter that refuses mounts, namespaces
 * (user namespaces included), ptrace, kernel keyrings, bpf and the like, inside
 * cgroups that cap memory, pids and CPU. Its stdout and stderr, the bytes it
 * stores and its /tmp are capped too. When the command exits, bwrap's init
 * ends the pid namespace, so no process outlives the action; the cgroup is
 * swept as well.
 *
 * It refuses to run rather than run unsandboxed: a missing bwrap or unusable
 * cgroups fail the action with FAILED_PRECONDITION.
 */
export class BwrapSandbox implements Sandbox {
  private readonly bwrap: string;
  private readonly setpriv: string;
  private readonly roPaths: string[];
  private readonly uid: number;
  private readonly gid: number;
  private readonly defaultPids: number;
  private readonly defaultMemoryBytes: number;
  private readonly maxStdoutBytes: number;
  private readonly maxStderrBytes: number;
  private readonly maxWriteBytes: number;
  private readonly maxWriteEntries: number;
  private readonly writeCheckIntervalMs: number;
  private readonly tmpBytes: number | undefined;
  private readonly filter: Buffer | undefined;
  private readonly disableUserns: boolean;

  constructor(opts: BwrapSandboxOptions = {}) {
    this.bwrap = findTool('bwrap', 'bubblewrap');
    this.setpriv = findTool('setpriv', 'util-linux');
    if (!detectCgroups()) throw failedPrecondition('sandbox unavailable: no usable cgroup hierarchy under /sys/fs/cgroup');
    this.roPaths = (opts.readOnlyPaths ?? DEFAULT_READ_ONLY_PATHS).filter((p) => existsSync(p));
    this.uid = opts.uid ?? 65534;
    this.gid = opts.gid ?? 65534;
    this.defaultPids = opts.defaultPids ?? 4096;
    this.defaultMemoryBytes = opts.defaultMemoryBytes ?? Math.min(4 * GiB, os.totalmem());
    this.maxStdoutBytes = opts.maxStdoutBytes ?? 64 * MiB;
    this.maxStderrBytes = opts.maxStderrBytes ?? 64 * MiB;
    this.maxWriteBytes = opts.maxWriteBytes ?? 16 * GiB;
    this.maxWriteEntries = opts.maxWriteEntries ?? 1_000_000;
    this.writeCheckIntervalMs = opts.writeCheckIntervalMs ?? 500;
    this.tmpBytes = opts.tmpBytes;
    const seccomp = opts.seccomp ?? true;
    if (seccomp && !isSeccompArch(process.arch)) {
      throw failedPrecondition(`sandbox unavailable: no seccomp filter for ${process.arch} (only x64 and arm64; seccomp: false runs without one)`);
    }
    this.filter = seccomp && isSeccompArch(process.arch) ? seccompProgram(process.arch, { allowPtrace: opts.allowPtrace ?? false }) : undefined;
    this.disableUserns = opts.disableUserns ?? !seccomp;
    const help = spawnSync(this.bwrap, ['--help'], { encoding: 'utf8' }).stdout ?? '';
    for (const flag of ['--size', '--cap-drop', '--seccomp', '--disable-userns']) {
      if (!help.includes(flag)) throw failedPrecondition(`sandbox unavailable: ${this.bwrap} lacks ${flag} (bubblewrap 0.8 or later is needed)`);
    }
  }

  private memoryLimit(spec: SandboxSpec): number {
    return spec.limits.memoryBytes ?? this.defaultMemoryBytes;
  }

  /** The bwrap arguments for a spec (exposed for tests and debugging). The seccomp filter is read from fd 3. */
  bwrapArgs(spec: SandboxSpec): string[] {
    const args = ['--unshare-ipc', '--unshare-pid', '--unshare-uts', '--unshare-cgroup-try', '--die-with-parent', '--new-session'];
    if (!spec.network) args.push('--unshare-net');
    // What runs as root inside is setpriv alone, which needs only these to
    // become the action user; that switch then clears them all.
    args.push('--cap-drop', 'ALL', '--cap-add', 'CAP_SETUID', '--cap-add', 'CAP_SETGID', '--cap-add', 'CAP_SETPCAP');
    // bwrap makes missing parents of mount points mode 0700, which the
    // unprivileged action user could not traverse: create them 0755 first.
    const made = new Set(['/']);
    const parentsOf = (p: string) => {
      const up: string[] = [];
      for (let d = path.posix.dirname(p); !made.has(d); d = path.posix.dirname(d)) up.unshift(d);
      for (const d of up) {
        args.push('--perms', '0755', '--dir', d);
        made.add(d);
      }
    };
    for (const p of [...this.roPaths, SANDBOX_ROOT]) parentsOf(p);
    for (const p of this.roPaths) {
      args.push('--ro-bind', p, p);
      made.add(p);
    }
    // A tmpfs's pages are charged to the memory cgroup of whoever writes them,
    // so the action's memory limit bounds /tmp already; the size makes a full
    // /tmp an ENOSPC rather than an OOM kill.
    const mem = this.memoryLimit(spec);
    const tmp = this.tmpBytes ?? (mem > 0 ? mem : Math.floor(os.totalmem() / 2));
    args.push('--proc', '/proc', '--dev', '/dev', '--perms', '01777', '--size', String(tmp), '--tmpfs', '/tmp');
    made.add('/tmp');
    if (spec.rootDir) args.push('--bind', spec.rootDir, SANDBOX_ROOT);
    // Binds come after /tmp's tmpfs so that a root under /tmp shows through it.
    for (const b of spec.binds ?? []) {
      parentsOf(b.path);
      args.push('--bind', b.host, b.path);
    }
    const cwd = spec.rootDir ? path.posix.join(SANDBOX_ROOT, spec.workingDirectory || '.') : spec.workingDirectory;
    args.push('--chdir', cwd);
    args.push('--clearenv');
    for (const [k, v] of Object.entries(spec.env)) args.push('--setenv', k, v);
    args.push('--hostname', 'repr-sandbox');
    const seccomp = this.filter ? ['--seccomp', '3'] : [];
    if (!this.disableUserns) args.push(...seccomp);
    args.push('--', this.setpriv, `--reuid=${this.uid}`, `--regid=${this.gid}`, '--clear-groups', '--bounding-set', '-all', '--inh-caps', '-all', '--');
    if (this.disableUserns) {
      // A user namespace needs the user to own it, so this runs as the action
      // user: root would map the action's uid onto its own, making it the owner
      // of every root-owned input. The filter goes last, as the namespaces
      // this step makes are the syscalls it refuses.
      args.push(this.bwrap, '--unshare-user', '--uid', String(this.uid), '--gid', String(this.gid), '--disable-userns', '--cap-drop', 'ALL');
      args.push('--dev-bind', '/', '/', '--chdir', cwd, ...seccomp, '--');
    }
    args.push(...spec.argv);
    return args;
  }

  async run(spec: SandboxSpec, abort?: AbortSignal): Promise<SandboxResult> {
    const name = `repr-${randomBytes(8).toString('hex')}`;
    const memoryBytes = this.memoryLimit(spec);
    let cg: ActionCgroup;
    try {
      cg = createActionCgroup(name, { pids: this.defaultPids, ...spec.limits, ...(memoryBytes > 0 ? { memoryBytes } : {}) });
    } catch (e) {
      throw failedPrecondition(`sandbox unavailable: cannot create a cgroup: ${(e as Error).message}`);
    }
    const started = performance.now();
    const startedAt = Date.now();
    // Output reaches its files through us, so that a cap can stop it: a file
    // size limit could not tell stdout from the action's outputs.
    const out = spec.stdoutPath ? openSync(spec.stdoutPath, 'w') : undefined;
    const err = spec.stderrPath ? openSync(spec.stderrPath, 'w') : undefined;
    try {
      // The shell joins the cgroups before exec'ing bwrap, so that nothing the
      // action starts can run outside them, even for a moment. The file size
      // limit stops any one file (or sparse file) at the write cap between two
      // measurements; no core dumps, which a host's core handler would collect.
      const prelude = cg.procsFiles.map((f) => `echo $$ > '${f}'`);
      prelude.push('ulimit -c 0');
      if (this.maxWriteBytes > 0) prelude.push(`ulimit -f ${fileSizeBlocks(this.maxWriteBytes)}`);
      const child = spawn('/bin/sh', ['-c', `${prelude.join(' && ')} && exec "$0" "$@"`, this.bwrap, ...this.bwrapArgs(spec)], {
        stdio: ['ignore', 'pipe', 'pipe', ...(this.filter ? (['pipe'] as const) : [])],
        env: {},
      });
      if (this.filter) {
        const fd3 = child.stdio[3] as Writable;
        fd3.on('error', () => undefined); // bwrap died before reading it; its exit says why
        fd3.end(this.filter);
      }

      let timedOut = false;
      let exceeded: LimitExceeded | undefined;
      const kill = () => {
        child.kill('SIGKILL');
        for (const pid of cg.pids()) {
          try {
            process.kill(pid, 'SIGKILL');
          } catch {
            /* gone */
          }
        }
      };
      let exited = false;
      const exceed = (limit: SandboxLimit, max: number, found: string) => {
        if (exceeded || timedOut) return;
        exceeded = { limit, max, message: limitMessage(limit, max, found, !exited) };
        if (!exited) kill();
      };
      const copying = Promise.all([
        drain(
          child.stdout!,
          out,
          this.maxStdoutBytes,
          (c) => spec.onOutput?.('stdout', c),
          () => exceed('stdout-bytes', this.maxStdoutBytes, ''),
        ),
        drain(
          child.stderr!,
          err,
          this.maxStderrBytes,
          (c) => spec.onOutput?.('stderr', c),
          () => exceed('stderr-bytes', this.maxStderrBytes, ''),
        ),
      ]);
      copying.catch(() => undefined); // awaited below, once the child is gone

      const dirs = spec.writableDirs ?? (spec.rootDir ? [spec.rootDir] : []);
      const checkWrites = dirs.length > 0 && (this.maxWriteBytes > 0 || this.maxWriteEntries > 0);
      const checkWritten = async (running: boolean) => {
        const u = await measureWrites(dirs, this.uid, startedAt);
        const bytes = u.bytes + (running ? await openDeletedBytes(cg.pids(), this.uid) : 0);
        if (this.maxWriteBytes > 0 && (bytes > this.maxWriteBytes || u.largestFile > this.maxWriteBytes)) {
          exceed('write-bytes', this.maxWriteBytes, bytes > this.maxWriteBytes ? `${bytes} bytes stored` : `a file of ${u.largestFile} bytes`);
        } else if (this.maxWriteEntries > 0 && u.entries > this.maxWriteEntries) {
          exceed('write-entries', this.maxWriteEntries, `${u.entries} created`);
        }
      };
      let checking: Promise<void> = Promise.resolve();
      let checkTimer: NodeJS.Timeout | undefined;
      // A measurement of a big tree is slow: space them so that measuring
      // takes at most a twentieth of the action's time.
      const scheduleCheck = (delay: number) => {
        checkTimer = setTimeout(() => {
          const t = performance.now();
          checking = checkWritten(true)
            .catch(() => undefined)
            .then(() => {
              if (!exited && !exceeded) scheduleCheck(Math.max(this.writeCheckIntervalMs, 20 * (performance.now() - t)));
            });
        }, delay);
      };
      if (checkWrites) scheduleCheck(this.writeCheckIntervalMs);

      const timer = spec.timeoutMs > 0 ? setTimeout(() => ((timedOut = true), kill()), spec.timeoutMs) : undefined;
      const onAbort = () => kill();
      abort?.addEventListener('abort', onAbort);
      let code: number | null;
      let signal: NodeJS.Signals | null;
      try {
        ({ code, signal } = await new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve, reject) => {
          child.once('error', reject);
          child.once('exit', (c: number | null, s: NodeJS.Signals | null) => resolve({ code: c, signal: s }));
        }));
        exited = true;
        await copying;
      } finally {
        exited = true;
        if (timer) clearTimeout(timer);
        if (checkTimer) clearTimeout(checkTimer);
        abort?.removeEventListener('abort', onAbort);
        await checking;
      }
      // Whatever it stored before exiting counts, even between two checks.
      if (checkWrites && !timedOut && !abort?.aborted) await checkWritten(false).catch(() => undefined);
      if (exceeded && err !== undefined) writeSync(err, `\n${exceeded.message}\n`);
      const oomKilled = cg.oomKilled();
      const peak = cg.peakMemoryBytes();
      return {
        exitCode: code ?? 128 + (signal ? (os.constants.signals[signal] ?? 0) : 0),
        ...(signal ? { signal } : {}),
        timedOut,
        oomKilled,
        wallMs: performance.now() - started,
        ...(peak !== undefined ? { peakMemoryBytes: peak } : {}),
        ...(memoryBytes > 0 ? { memoryLimitBytes: memoryBytes } : {}),
        ...(exceeded ? { limitExceeded: exceeded } : {}),
      };
    } finally {
      if (out !== undefined) closeSync(out);
      if (err !== undefined) closeSync(err);
      cg.destroy();
    }
  }
}

const writeAsync = promisify(write);

/**
 * Copies a child's output to a file, up to `max` bytes (0: no cap), calling
 * `over` once more would be written; without a file, hands each chunk on.
 * Reading on after the cap keeps the writer from blocking until it is killed.
 */
async function drain(src: Readable, fd: number | undefined, max: number, onChunk: (c: Buffer) => void, over: () => void): Promise<void> {
  let room = fd !== undefined && max > 0 ? max : Infinity;
  for await (const chunk of src as AsyncIterable<Buffer>) {
    if (fd === undefined) {
      onChunk(chunk);
      continue;
    }
    const part = chunk.length > room ? chunk.subarray(0, room) : chunk;
    room -= part.length;
    for (let done = 0; done < part.length; ) done += (await writeAsync(fd, part, done, part.length - done)).bytesWritten;
    if (part.length < chunk.length) over();
  }
}

/** RLIMIT_FSIZE in dash's 512-byte blocks, just above `max` so that reaching it means exceeding the cap. */
function fileSizeBlocks(max: number): number {
  return Math.floor(max / 512) + 1;
}

function limitMessage(limit: SandboxLimit, max: number, found: string, running: boolean): string {
  const what: Record<SandboxLimit, string> = {
    'stdout-bytes': `its stdout exceeded the cap of ${bytes(max)}`,
    'stderr-bytes': `its stderr exceeded the cap of ${bytes(max)}`,
    'write-bytes': `it wrote more than the cap of ${bytes(max)} to its directories (${found})`,
    'write-entries': `it created more than the cap of ${max} files and directories (${found})`,
  };
  return `repr: the action ${running ? 'was killed' : 'failed'}: ${what[limit]} [limit ${limit}]`;
}

function bytes(n: number): string {
  for (const [unit, size] of [
    ['GiB', GiB],
    ['MiB', MiB],
    ['KiB', 1024],
  ] as const) {
    if (n >= size && n % size === 0) return `${n / size} ${unit}`;
  }
  return `${n} bytes`;
}

function findTool(name: string, pkg: string): string {
  const r = spawnSync('/bin/sh', ['-c', `command -v ${name}`], { encoding: 'utf8' });
  const p = r.stdout.trim();
  if (r.status !== 0 || !p) throw failedPrecondition(`sandbox unavailable: ${name} not found (Debian: apt-get install -y ${pkg})`);
  return p;
}
