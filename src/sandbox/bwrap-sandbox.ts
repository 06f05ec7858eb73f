import { spawn, spawnSync } from 'node:child_process';
import { existsSync, openSync, closeSync } from 'node:fs';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { failedPrecondition } from '../common/errors.js';
import { createActionCgroup, detectCgroups, type ActionCgroup } from './cgroups.js';
import { SANDBOX_ROOT, type Sandbox, type SandboxResult, type SandboxSpec } from './sandbox.js';

export interface BwrapSandboxOptions {
  /** Host paths bound read-only at the same place: the toolchain. Missing ones are skipped. */
  readOnlyPaths?: string[];
  /** Unprivileged uid/gid the action runs as, so it cannot modify hard-linked CAS files. */
  uid?: number;
  gid?: number;
  /** Default pid limit when the action does not ask for one. */
  defaultPids?: number;
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
 * input root are visible; the action runs as an unprivileged user inside
 * cgroups that cap memory, pids and CPU. When the command exits, bwrap's init
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

  constructor(opts: BwrapSandboxOptions = {}) {
    this.bwrap = findTool('bwrap', 'bubblewrap');
    this.setpriv = findTool('setpriv', 'util-linux');
    if (!detectCgroups()) throw failedPrecondition('sandbox unavailable: no usable cgroup hierarchy under /sys/fs/cgroup');
    this.roPaths = (opts.readOnlyPaths ?? DEFAULT_READ_ONLY_PATHS).filter((p) => existsSync(p));
    this.uid = opts.uid ?? 65534;
    this.gid = opts.gid ?? 65534;
    this.defaultPids = opts.defaultPids ?? 4096;
  }

  /** The bwrap arguments for a spec (exposed for tests and debugging). */
  bwrapArgs(spec: SandboxSpec): string[] {
    const args = ['--unshare-ipc', '--unshare-pid', '--unshare-uts', '--unshare-cgroup-try', '--die-with-parent', '--new-session'];
    if (!spec.network) args.push('--unshare-net');
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
    args.push('--proc', '/proc', '--dev', '/dev', '--perms', '01777', '--tmpfs', '/tmp');
    made.add('/tmp');
    if (spec.rootDir) args.push('--bind', spec.rootDir, SANDBOX_ROOT);
    // Binds come after /tmp's tmpfs so that a root under /tmp shows through it.
    for (const b of spec.binds ?? []) {
      parentsOf(b.path);
      args.push('--bind', b.host, b.path);
    }
    args.push('--chdir', spec.rootDir ? path.posix.join(SANDBOX_ROOT, spec.workingDirectory || '.') : spec.workingDirectory);
    args.push('--clearenv');
    for (const [k, v] of Object.entries(spec.env)) args.push('--setenv', k, v);
    args.push('--hostname', 'repr-sandbox');
    args.push('--', this.setpriv, `--reuid=${this.uid}`, `--regid=${this.gid}`, '--clear-groups', '--', ...spec.argv);
    return args;
  }

  async run(spec: SandboxSpec, abort?: AbortSignal): Promise<SandboxResult> {
    const name = `repr-${randomBytes(8).toString('hex')}`;
    let cg: ActionCgroup;
    try {
      cg = createActionCgroup(name, { pids: this.defaultPids, ...spec.limits });
    } catch (e) {
      throw failedPrecondition(`sandbox unavailable: cannot create a cgroup: ${(e as Error).message}`);
    }
    const started = performance.now();
    // Files when asked for (actions), else pipes read as the command writes.
    const out = spec.stdoutPath ? openSync(spec.stdoutPath, 'w') : 'pipe';
    const err = spec.stderrPath ? openSync(spec.stderrPath, 'w') : 'pipe';
    try {
      // The shell joins the cgroups before exec'ing bwrap, so that nothing the
      // action starts can run outside them, even for a moment.
      const join = cg.procsFiles.map((f) => `echo $$ > '${f}'`).join(' && ');
      const child = spawn('/bin/sh', ['-c', `${join} && exec "$0" "$@"`, this.bwrap, ...this.bwrapArgs(spec)], {
        stdio: ['ignore', out, err],
        env: {},
      });
      child.stdout?.on('data', (c: Buffer) => spec.onOutput?.('stdout', c));
      child.stderr?.on('data', (c: Buffer) => spec.onOutput?.('stderr', c));
      let timedOut = false;
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
      const timer = spec.timeoutMs > 0 ? setTimeout(() => ((timedOut = true), kill()), spec.timeoutMs) : undefined;
      const onAbort = () => kill();
      abort?.addEventListener('abort', onAbort);
      // 'close' rather than 'exit' with pipes: it comes after their last bytes.
      const { code, signal } = await new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve, reject) => {
        child.once('error', reject);
        child.once(typeof out === 'number' && typeof err === 'number' ? 'exit' : 'close', (c: number | null, s: NodeJS.Signals | null) => resolve({ code: c, signal: s }));
      });
      if (timer) clearTimeout(timer);
      abort?.removeEventListener('abort', onAbort);
      const oomKilled = cg.oomKilled();
      const peak = cg.peakMemoryBytes();
      return {
        exitCode: code ?? 128 + signalNumber(signal),
        ...(signal ? { signal } : {}),
        timedOut,
        oomKilled,
        wallMs: performance.now() - started,
        ...(peak !== undefined ? { peakMemoryBytes: peak } : {}),
      };
    } finally {
      if (typeof out === 'number') closeSync(out);
      if (typeof err === 'number') closeSync(err);
      cg.destroy();
    }
  }
}

function signalNumber(s: NodeJS.Signals | null): number {
  return s === 'SIGKILL' ? 9 : s === 'SIGTERM' ? 15 : s === 'SIGSEGV' ? 11 : s === 'SIGABRT' ? 6 : 0;
}

function findTool(name: string, pkg: string): string {
  const r = spawnSync('/bin/sh', ['-c', `command -v ${name}`], { encoding: 'utf8' });
  const p = r.stdout.trim();
  if (r.status !== 0 || !p) throw failedPrecondition(`sandbox unavailable: ${name} not found (Debian: apt-get install -y ${pkg})`);
  return p;
}
