import { existsSync, mkdirSync, readFileSync, rmdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';

export interface ResourceLimits {
  /** Bytes of memory (RSS + page cache the group charges); exceeding it OOM-kills. */
  memoryBytes?: number;
  /** Most processes/threads at once. */
  pids?: number;
  /** CPU quota in cores (1.5 = one and a half cores' worth of time per period). */
  cpus?: number;
}

/**
 * One cgroup per action, in every hierarchy we limit: cgroup v1 (memory, pids,
 * cpu controllers mounted separately, as on these machines) or the unified v2
 * hierarchy where that is all the host has. Groups are created under the
 * server's own cgroup, not at the root, which a container may not allow.
 */
export interface ActionCgroup {
  /** Files a process writes its pid to, to join the group (one per hierarchy). */
  readonly procsFiles: string[];
  /** Pids in the group now. */
  pids(): number[];
  /** True if the memory controller recorded an OOM kill or a limit hit. */
  oomKilled(): boolean;
  /** Peak memory use in bytes, if the controller reports it. */
  peakMemoryBytes(): number | undefined;
  /** Kills what is left and removes the group. */
  destroy(): void;
}

const ROOT = '/sys/fs/cgroup';

type Layout = { kind: 'v1'; dirs: Record<'memory' | 'pids' | 'cpu', string> } | { kind: 'v2'; dir: string };

let cached: Layout | null | undefined;

/** Where this process's groups live, or null if cgroups cannot be used here. */
export function detectCgroups(): Layout | null {
  if (cached !== undefined) return cached;
  cached = detect();
  return cached;
}

function detect(): Layout | null {
  let lines: string[];
  try {
    lines = readFileSync('/proc/self/cgroup', 'utf8').trim().split('\n');
  } catch {
    return null;
  }
  const own = new Map<string, string>();
  for (const l of lines) {
    const [, ctrls, p] = l.split(':');
    for (const c of (ctrls ?? '').split(',')) own.set(c, p ?? '/');
  }
  if (existsSync(path.join(ROOT, 'memory')) && existsSync(path.join(ROOT, 'pids')) && existsSync(path.join(ROOT, 'cpu'))) {
    const dir = (ctrl: string) => path.join(ROOT, ctrl, own.get(ctrl) ?? '/');
    return { kind: 'v1', dirs: { memory: dir('memory'), pids: dir('pids'), cpu: dir('cpu') } };
  }
  if (existsSync(path.join(ROOT, 'cgroup.controllers'))) {
    const controllers = readFileSync(path.join(ROOT, 'cgroup.controllers'), 'utf8');
    if (!/\bmemory\b/.test(controllers) || !/\bpids\b/.test(controllers)) return null;
    return { kind: 'v2', dir: path.join(ROOT, own.get('') ?? '/') };
  }
  return null;
}

function write(file: string, value: string): void {
  writeFileSync(file, value);
}

function readNumber(file: string): number | undefined {
  try {
    return Number(readFileSync(file, 'utf8').trim());
  } catch {
    return undefined;
  }
}

function readPids(file: string): number[] {
  try {
    return readFileSync(file, 'utf8').split('\n').filter(Boolean).map(Number);
  } catch {
    return [];
  }
}

const CPU_PERIOD_US = 100_000;

export function createActionCgroup(name: string, limits: ResourceLimits): ActionCgroup {
  const layout = detectCgroups();
  if (!layout) throw new Error('no usable cgroup hierarchy (need v1 memory+pids+cpu controllers, or v2 with memory and pids)');
  if (layout.kind === 'v1') {
    const dirs = {
      memory: path.join(layout.dirs.memory, name),
      pids: path.join(layout.dirs.pids, name),
      cpu: path.join(layout.dirs.cpu, name),
    };
    for (const d of Object.values(dirs)) mkdirSync(d, { recursive: true });
    if (limits.memoryBytes) {
      write(path.join(dirs.memory, 'memory.limit_in_bytes'), String(limits.memoryBytes));
      // Without this the group could dodge the limit by swapping, where swap exists.
      try {
        write(path.join(dirs.memory, 'memory.memsw.limit_in_bytes'), String(limits.memoryBytes));
      } catch {
        /* no swap accounting */
      }
    }
    if (limits.pids) write(path.join(dirs.pids, 'pids.max'), String(limits.pids));
    if (limits.cpus) {
      write(path.join(dirs.cpu, 'cpu.cfs_period_us'), String(CPU_PERIOD_US));
      write(path.join(dirs.cpu, 'cpu.cfs_quota_us'), String(Math.max(1000, Math.round(limits.cpus * CPU_PERIOD_US))));
    }
    return {
      procsFiles: Object.values(dirs).map((d) => path.join(d, 'cgroup.procs')),
      pids: () => readPids(path.join(dirs.pids, 'cgroup.procs')),
      oomKilled: () => {
        // Newer kernels count kills in oom_control; older ones only count limit hits.
        const kills = /oom_kill (\d+)/.exec(safeRead(path.join(dirs.memory, 'memory.oom_control')));
        return kills ? Number(kills[1]) > 0 : (readNumber(path.join(dirs.memory, 'memory.failcnt')) ?? 0) > 0;
      },
      peakMemoryBytes: () => readNumber(path.join(dirs.memory, 'memory.max_usage_in_bytes')),
      destroy: () => destroyDirs(Object.values(dirs), () => readPids(path.join(dirs.pids, 'cgroup.procs'))),
    };
  }
  const dir = path.join(layout.dir, name);
  mkdirSync(dir, { recursive: true });
  if (limits.memoryBytes) {
    write(path.join(dir, 'memory.max'), String(limits.memoryBytes));
    try {
      write(path.join(dir, 'memory.swap.max'), '0');
    } catch {
      /* no swap controller */
    }
  }
  if (limits.pids) write(path.join(dir, 'pids.max'), String(limits.pids));
  if (limits.cpus) write(path.join(dir, 'cpu.max'), `${Math.max(1000, Math.round(limits.cpus * CPU_PERIOD_US))} ${CPU_PERIOD_US}`);
  return {
    procsFiles: [path.join(dir, 'cgroup.procs')],
    pids: () => readPids(path.join(dir, 'cgroup.procs')),
    oomKilled: () => /oom_kill [1-9]/.test(safeRead(path.join(dir, 'memory.events'))),
    peakMemoryBytes: () => readNumber(path.join(dir, 'memory.peak')),
    destroy: () => destroyDirs([dir], () => readPids(path.join(dir, 'cgroup.procs'))),
  };
}

function safeRead(file: string): string {
  try {
    return readFileSync(file, 'utf8');
  } catch {
    return '';
  }
}

function destroyDirs(dirs: string[], pids: () => number[]): void {
  // Kill until empty: a process may fork while we kill its siblings.
  for (let round = 0; round < 50; round++) {
    const left = pids();
    if (left.length === 0) break;
    for (const pid of left) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        /* gone */
      }
    }
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 2);
  }
  for (const d of dirs) {
    for (let i = 0; i < 50; i++) {
      try {
        rmdirSync(d);
        break;
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code === 'ENOENT') break;
        Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 5);
      }
    }
  }
}
