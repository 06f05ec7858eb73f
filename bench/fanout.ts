import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fetchStatus } from '../src/client/status-client.js';
import { type CProject, writeCProject } from '../support/c-project.js';
import { REPR_BIN, spawnWorker, type WorkerProcess } from '../support/spawn-server.js';
import { startBenchServer } from './server.js';
import { median, round, timedCommand } from './stats.js';
import type { Benchmark, Metric } from './types.js';

const WORKERS = 3;
const EXECUTORS_PER_WORKER = 2;
/** make's jobs in every mode: enough to keep every executor of the farm busy. */
const JOBS = WORKERS * EXECUTORS_PER_WORKER;

/** Digests of the build's objects and program. */
function outputs(p: CProject): Map<string, string> {
  return new Map(
    [...p.objects, p.program].map((f) => [
      f,
      createHash('sha256')
        .update(readFileSync(path.join(p.dir, f)))
        .digest('hex'),
    ]),
  );
}

function sameOutputs(a: Map<string, string>, b: Map<string, string>): number {
  let same = 0;
  for (const [f, h] of a) if (b.get(f) === h) same++;
  return same;
}

/** Whether this build of repr has the compiler wrapper. */
function hasCompilerWrapper(): boolean {
  // Without it the CLI's general help answers, with status 0 too.
  return /^Usage: repr cc\b/m.test(spawnSync(process.execPath, [REPR_BIN, 'cc', '--help'], { encoding: 'utf8' }).stdout);
}

/**
 * One build of the generated C project three ways, on a scheduler with
 * three workers of two executors each: `make -j6` locally (the baseline),
 * `repr run -- make -j6` (the whole build on one executor), and `make -j6
 * CC="repr cc gcc"` (each compile a run of its own through the daemon, over
 * every executor; links stay local). Each build starts from a clean build
 * directory, after one unmeasured round that uploads the files and leaves
 * the records and the daemon in place: what a developer's second and later
 * builds cost. Every remote build's objects and program are compared with a
 * local build's.
 */
export const fanout: Benchmark = {
  name: 'fanout',
  description: `make -j${JOBS} of the generated C project: locally vs repr run on one executor vs CC="repr cc gcc" over ${WORKERS} workers`,
  async run(ctx) {
    const reps = ctx.quick ? 1 : 5;
    const base = mkdtempSync(path.join(os.tmpdir(), 'repr-bench-fanout-'));
    const bench = await startBenchServer(['--executors', '0']);
    const workers: WorkerProcess[] = [];
    // The daemon's socket lives here, so this run starts its own and no one else's is reused.
    const runtimeDir = path.join(base, 'runtime');
    mkdirSync(runtimeDir, { mode: 0o700 });
    const env = {
      ...process.env,
      REPR_SERVER: bench.server.url,
      XDG_RUNTIME_DIR: runtimeDir,
      REPR_TOKEN: '',
      REPR_RUN_RECORDS: path.join(base, 'records'),
    };
    try {
      for (let i = 0; i < WORKERS; i++)
        workers.push(
          await spawnWorker(bench.server.url, [
            '--name',
            `fan-${i + 1}`,
            '--executors',
            String(EXECUTORS_PER_WORKER),
            '--data-dir',
            path.join(base, `worker-${i + 1}`),
          ]),
        );
      const p = writeCProject(path.join(base, 'proj'), ctx.quick ? { parts: 6 } : {});
      const clean = () => rmSync(path.join(p.dir, 'build'), { recursive: true, force: true });
      const make = ['make', `-j${JOBS}`];

      // The reference: a local build, which also warms the page cache for the measured ones.
      clean();
      await timedCommand(make[0]!, make.slice(1), p.dir, env);
      const reference = outputs(p);
      const modes: Mode[] = [
        { label: `local make -j${JOBS}`, cmd: make[0]!, args: make.slice(1), ms: [] },
        {
          label: `repr run -- make -j${JOBS} (one executor)`,
          cmd: process.execPath,
          args: [REPR_BIN, 'run', '--server', bench.server.url, '--', ...make],
          ms: [],
        },
      ];
      const fanned = hasCompilerWrapper();
      if (fanned)
        modes.push({
          label: `make -j${JOBS} CC="repr cc gcc" (${WORKERS} workers)`,
          cmd: 'make',
          args: [`-j${JOBS}`, `CC=${process.execPath} ${REPR_BIN} cc gcc`],
          ms: [],
        });
      else ctx.log('this build of repr has no `repr cc`: the fanned-out build is not measured');
      let identical = 0;
      let compared = 0;
      const byWorker = async () => new Map((await fetchStatus(bench.server.url)).workers.map((w) => [w.name, Number(w.completed)]));
      const spreadOver = new Map<string, number>();
      // Round -1 (skipped by --quick) warms up: uploads the files, leaves the records and the daemon in place.
      // The modes alternate within each round, so a machine whose load drifts weighs on all of them alike.
      for (let i = ctx.quick ? 0 : -1; i < reps; i++) {
        for (const m of modes) {
          clean();
          const before = await byWorker();
          const t = await timedCommand(m.cmd, m.args, p.dir, env);
          const after = await byWorker();
          if (i >= 0) m.ms.push(t);
          if (m === modes[2]) for (const [w, n] of after) spreadOver.set(w, (spreadOver.get(w) ?? 0) + n - (before.get(w) ?? 0));
          if (m !== modes[0]) {
            identical += sameOutputs(reference, outputs(p));
            compared += reference.size;
          }
          ctx.log(`${m.label}${i < 0 ? ' (warm-up)' : ''}: ${round(t)} ms`);
        }
      }
      const local = round(median(modes[0]!.ms));
      const one = round(median(modes[1]!.ms));
      const metrics: Metric[] = modes.map((m, k) => ({
        name: m.label,
        value: round(median(m.ms)),
        unit: 'ms',
        ...(k > 0 ? { baseline: local } : {}),
        spread: spread(m.ms),
      }));
      if (fanned) {
        const per = [...spreadOver.values()];
        const total = per.reduce((a, b) => a + b, 0);
        const used = per.filter((n) => n > 0).length;
        metrics.push(
          { name: 'fanned out, against repr run on one executor', value: metrics[2]!.value, unit: 'ms', baseline: one },
          { name: 'remote compiles per build', value: round(total / (reps + (ctx.quick ? 0 : 1))), unit: 'runs' },
          { name: 'workers that compiled', value: used, unit: 'workers', target: { text: `= ${WORKERS}`, met: used === WORKERS } },
          { name: 'share of compiles on the busiest worker', value: round((100 * Math.max(...per)) / Math.max(1, total)), unit: '%' },
        );
        spawnSync(process.execPath, [REPR_BIN, 'daemon', 'stop', '--server', bench.server.url], { env, stdio: 'ignore' });
      }
      metrics.push({
        name: 'remote outputs byte-identical to the local build',
        value: identical,
        unit: `of ${compared} files`,
        target: { text: '= all', met: identical === compared },
      });
      return metrics;
    } finally {
      for (const w of workers) await w.stop();
      await bench.stop();
      rmSync(base, { recursive: true, force: true });
    }
  },
};

interface Mode {
  label: string;
  cmd: string;
  args: string[];
  ms: number[];
}

function spread(xs: number[]): [number, number] {
  return [round(Math.min(...xs)), round(Math.max(...xs))];
}
