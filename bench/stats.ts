import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
/** Order statistics over samples; the machines are noisy, so medians and spreads, not means. */
export function quantile(samples: readonly number[], q: number): number {
  if (samples.length === 0) return NaN;
  const s = [...samples].sort((a, b) => a - b);
  const i = Math.min(s.length - 1, Math.max(0, Math.ceil(q * s.length) - 1));
  return s[i]!;
}

export const median = (s: readonly number[]) => quantile(s, 0.5);

export function summary(samples: readonly number[]): { median: number; min: number; max: number; n: number } {
  return { median: median(samples), min: Math.min(...samples), max: Math.max(...samples), n: samples.length };
}

export const round = (n: number, digits = 1) => Math.round(n * 10 ** digits) / 10 ** digits;

/** Milliseconds of each of `n` sequential calls. */
export async function timeEach(fn: () => Promise<unknown>, n: number): Promise<number[]> {
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    const t = performance.now();
    await fn();
    out.push(performance.now() - t);
  }
  return out;
}

/**
 * CPU time (ms) a process has used, its own and that of its waited-for
 * children, from /proc. On a shared machine CPU per unit of work moves far
 * less than wall-clock throughput, which other tenants' load drags around.
 */
export function processCpuMs(pid: number): { self: number; children: number } {
  // Fields after the ")" that closes the command name: utime is the 12th, then stime, cutime, cstime.
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  const tick = 1000 / CLOCK_TICKS_PER_SECOND;
  return { self: (Number(f[11]) + Number(f[12])) * tick, children: (Number(f[13]) + Number(f[14])) * tick };
}

/** USER_HZ: 100 on every Linux architecture Node runs on. */
const CLOCK_TICKS_PER_SECOND = 100;

/** Runs a command to its end; its wall time in ms, or an error with its output. */
export function timedCommand(cmd: string, args: string[], cwd: string, env: NodeJS.ProcessEnv): Promise<number> {
  return new Promise((resolve, reject) => {
    const t = performance.now();
    const child = spawn(cmd, args, { cwd, env, stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    child.stderr.on('data', (c: Buffer) => (err += c.toString()));
    child.on('error', reject);
    child.on('exit', (code) =>
      code === 0 ? resolve(performance.now() - t) : reject(new Error(`${cmd} ${args.join(' ')} exited ${code}: ${err.slice(-2000)}`)),
    );
  });
}
