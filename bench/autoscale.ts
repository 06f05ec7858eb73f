import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import type { PolicyConfig } from '../src/autoscale/autoscale.js';
import { defaultPolicy } from '../src/autoscale/policy.js';
import { type SimResult, simulate } from '../src/autoscale/simulator.js';
import { TRACES } from '../src/autoscale/traces.js';
import { REPO_ROOT } from '../support/servers.js';
import { Raster, type Rgb } from './png.js';
import { median, round } from './stats.js';
import type { Benchmark, Metric } from './types.js';

/** A pool of 4-executor cloud machines that boot in 20 s, looked at every 5 s, as a controller would. */
const POOL: PolicyConfig = { ...defaultPolicy, maxWorkers: 20 };
const STARTUP_SECONDS = 20;
const TICK_SECONDS = 5;

/** Static is the pool sized for the peak: what running without an autoscaler costs. */
const POLICIES: { name: string; policy: PolicyConfig }[] = [
  { name: 'static', policy: { ...POOL, mode: 'static', minWorkers: POOL.maxWorkers } },
  { name: 'reactive', policy: { ...POOL, mode: 'reactive' } },
  { name: 'predictive', policy: { ...POOL, mode: 'predictive' } },
];

/**
 * The seed's parameters moved one at a time, both adaptive policies alike:
 * shows which of them the cost and the wait answer to.
 */
const VARIANTS: { name: string; change: Partial<PolicyConfig> }[] = [
  { name: 'maxScaleDownStep 2', change: { maxScaleDownStep: 2 } },
  { name: 'scaleDownCooldown 60 s', change: { scaleDownCooldownSeconds: 60 } },
  { name: 'targetUtilization 0.7', change: { targetUtilization: 0.7 } },
  { name: 'horizon 10 s, trendWindow 20', change: { horizonSeconds: 10, trendWindow: 20 } },
];

/** Seeds of each trace beyond the one the table shows, so that no rule is tuned to one draw of arrivals. */
const SEEDS = 25;

interface Row {
  trace: string;
  policy: string;
  result: SimResult;
}

/**
 * The decision policies replayed over four load traces on a simulated clock
 * (src/autoscale/simulator.ts): worker-seconds paid and queue wait, static
 * vs reactive vs predictive, and a PNG of load, capacity and queue over time.
 * No server runs: it measures the policy, not the machine.
 */
export const autoscale: Benchmark = {
  name: 'autoscale',
  description: 'scaling policies on simulated traces: worker-seconds and queue wait, static vs reactive vs predictive',
  async run(ctx) {
    const rows: Row[] = [];
    for (const make of TRACES) {
      const trace = make();
      ctx.log(`${trace.name}: ${trace.description}`);
      for (const p of POLICIES)
        rows.push({
          trace: trace.name,
          policy: p.name,
          result: simulate(trace, { policy: p.policy, startupSeconds: STARTUP_SECONDS, tickSeconds: TICK_SECONDS }),
        });
    }
    for (const line of table(rows)) ctx.log(line);
    for (const line of sensitivity(rows)) ctx.log(line);
    for (const line of otherSeeds(ctx.quick ? 3 : SEEDS)) ctx.log(line);
    // The full run's plot is the one BENCHMARKS.md shows; a quick run's goes where nothing refers to it.
    const file = ctx.quick ? path.join(REPO_ROOT, 'bench', 'results', 'autoscale-quick.png') : path.join(REPO_ROOT, 'docs', 'autoscale.png');
    mkdirSync(path.dirname(file), { recursive: true });
    writeFileSync(file, plot(rows));
    ctx.log(`plot: ${file}`);

    const metrics: Metric[] = [];
    for (const r of rows) {
      const reactive = rows.find((x) => x.trace === r.trace && x.policy === 'reactive')!.result;
      const m = (what: string, value: number, unit: string, base: number): Metric => ({
        name: `${r.trace}, ${r.policy}: ${what}`,
        value,
        unit,
        ...(r.policy === 'reactive' ? {} : { baseline: base }),
      });
      metrics.push(m('worker-seconds', Math.round(r.result.workerSeconds), 'worker-s', Math.round(reactive.workerSeconds)));
      metrics.push(m('p50 queue wait', round(r.result.wait.p50, 1), 's', round(reactive.wait.p50, 1)));
      const p95 = m('p95 queue wait', round(r.result.wait.p95, 1), 's', round(reactive.wait.p95, 1));
      if (r.policy === 'predictive') {
        const met = r.result.wait.p95 <= reactive.wait.p95 * 1.1 && r.result.workerSeconds < reactive.workerSeconds;
        p95.target = { text: 'p95 ≤ 1.1× reactive with fewer worker-seconds', met };
      }
      metrics.push(p95);
    }
    return metrics;
  },
};

/** A Markdown table, so that BENCHMARKS.md shows what the run printed. */
function table(rows: Row[]): string[] {
  const out = [
    '| trace | policy | worker-s | × reactive | p50 wait | p95 wait | p95 × reactive | max wait | scale events |',
    '|---|---|---:|---:|---:|---:|---:|---:|---:|',
  ];
  for (const r of rows) {
    const base = rows.find((x) => x.trace === r.trace && x.policy === 'reactive')!.result;
    const ratio = (a: number, b: number) => (b === 0 ? (a === 0 ? '1.00' : '∞') : (a / b).toFixed(2));
    const w = r.result.wait;
    out.push(
      `| ${r.trace} | ${r.policy} | ${Math.round(r.result.workerSeconds)} | ${ratio(r.result.workerSeconds, base.workerSeconds)} | ` +
        `${w.p50.toFixed(1)} s | ${w.p95.toFixed(1)} s | ${ratio(w.p95, base.wait.p95)} | ${w.max.toFixed(1)} s | ${r.result.scaleEvents.length} |`,
    );
  }
  return out;
}

/** Each variant against the default reactive policy of the same trace: worker-seconds and p95 wait ratios. */
function sensitivity(rows: Row[]): string[] {
  const traces = TRACES.map((make) => make());
  const out = [`| variant | policy | ${traces.map((t) => `${t.name} worker-s, p95`).join(' | ')} |`, `|---|---|${traces.map(() => '---:').join('|')}|`];
  for (const v of VARIANTS) {
    for (const mode of ['reactive', 'predictive'] as const) {
      const cells = traces.map((trace) => {
        const base = rows.find((x) => x.trace === trace.name && x.policy === 'reactive')!.result;
        const r = simulate(trace, { policy: { ...POOL, ...v.change, mode }, startupSeconds: STARTUP_SECONDS, tickSeconds: TICK_SECONDS });
        return `${(r.workerSeconds / base.workerSeconds).toFixed(2)}×, ${r.wait.p95.toFixed(1)} s`;
      });
      out.push(`| ${v.name} | ${mode} | ${cells.join(' | ')} |`);
    }
  }
  return out;
}

/**
 * Predictive against reactive over `count` seeds of each trace (the table's
 * seed, 16, and the ones after it): on how many the target is met, and the
 * medians and ranges of the ratios.
 */
function otherSeeds(count: number): string[] {
  const out = [
    `| trace | target met, of ${count} seeds | predictive worker-s × reactive, median (range) | p95 wait reactive → predictive, median (range) |`,
    '|---|---:|---:|---:|',
  ];
  const range = (xs: number[], f: (n: number) => string) => `${f(median(xs))} (${f(Math.min(...xs))}–${f(Math.max(...xs))})`;
  for (const make of TRACES) {
    let met = 0;
    const cost: number[] = [];
    const reactiveP95: number[] = [];
    const predictiveP95: number[] = [];
    for (let seed = 16; seed < 16 + count; seed++) {
      const trace = make(seed);
      const run = (mode: PolicyConfig['mode']) => simulate(trace, { policy: { ...POOL, mode }, startupSeconds: STARTUP_SECONDS, tickSeconds: TICK_SECONDS });
      const r = run('reactive');
      const p = run('predictive');
      if (p.workerSeconds < r.workerSeconds && p.wait.p95 <= r.wait.p95 * 1.1) met++;
      cost.push(p.workerSeconds / r.workerSeconds);
      reactiveP95.push(r.wait.p95);
      predictiveP95.push(p.wait.p95);
    }
    const s = (n: number) => `${n.toFixed(1)} s`;
    out.push(`| ${make().name} | ${met} | ${range(cost, (n) => `${n.toFixed(2)}×`)} | ${range(reactiveP95, s)} → ${range(predictiveP95, s)} |`);
  }
  return out;
}

const GREY: Rgb = [150, 150, 150];
const BLUE: Rgb = [31, 100, 200];
const RED: Rgb = [214, 40, 40];
const INK: Rgb = [30, 30, 30];
const FAINT: Rgb = [225, 225, 225];

/**
 * One panel per trace and policy (rows: traces; columns: policies), each row
 * on one scale so that the policies compare at a glance: the load in
 * executors wanted, the capacity paid for (workers × executors per worker),
 * and the queue.
 */
function plot(rows: Row[]): Buffer {
  const traces = [...new Set(rows.map((r) => r.trace))];
  const panelW = 400;
  const panelH = 200;
  const top = 40;
  const img = new Raster(panelW * POLICIES.length, top + panelH * traces.length);
  let x = 10;
  for (const [label, color] of [
    ['load (executors wanted)', GREY],
    [`capacity (workers × ${POOL.executorsPerWorker} executors)`, BLUE],
    ['queued', RED],
  ] as const) {
    img.fill(x, 14, 14, 10, color);
    x += 20 + img.text(x + 20, 14, label, INK) + 20;
  }
  for (const [ti, trace] of traces.entries()) {
    const inRow = rows.filter((r) => r.trace === trace);
    const end = Math.max(...inRow.map((r) => r.result.endSeconds));
    const yMax = Math.max(1, ...inRow.flatMap((r) => r.result.series.map((p) => Math.max(p.load, p.workers * POOL.executorsPerWorker))));
    for (const [pi, r] of inRow.entries()) {
      const ox = pi * panelW + 50;
      const oy = top + ti * panelH + 24;
      const w = panelW - 70;
      const h = panelH - 50;
      const px = (t: number) => ox + (t / end) * w;
      const py = (v: number) => oy + h - (v / yMax) * h;
      img.fill(ox, oy, w, h, [250, 250, 250]);
      for (let g = 0; g <= 4; g++) img.line(ox, oy + (h * g) / 4, ox + w, oy + (h * g) / 4, FAINT, 1);
      img.text(ox, oy - 16, `${trace} ${r.policy}`, INK);
      img.text(ox - 44, oy - 2, String(Math.round(yMax)), INK);
      img.text(ox - 12, oy + h - 8, '0', INK);
      img.text(ox, oy + h + 6, '0', INK);
      const minutes = `${Math.round(end / 60)} min`;
      img.text(ox + w - minutes.length * 8, oy + h + 6, minutes, INK);
      const s = r.result.series;
      for (let i = 1; i < s.length; i++) {
        const a = s[i - 1]!;
        const b = s[i]!;
        img.line(px(a.t), py(a.load), px(b.t), py(b.load), GREY, 1);
        img.line(px(a.t), py(a.queued), px(b.t), py(b.queued), RED, 1);
        // Capacity changes in steps: along, then up or down.
        const ca = a.workers * POOL.executorsPerWorker;
        const cb = b.workers * POOL.executorsPerWorker;
        img.line(px(a.t), py(ca), px(b.t), py(ca), BLUE, 2);
        if (ca !== cb) img.line(px(b.t), py(ca), px(b.t), py(cb), BLUE, 2);
      }
    }
  }
  return img.png();
}
