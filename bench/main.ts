import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { acHit } from './ac-hit.js';
import { autoscale } from './autoscale.js';
import { autoscalePool } from './autoscale-pool.js';
import { bazel } from './bazel.js';
import { byteStream } from './bytestream.js';
import { ccOverhead } from './cc-overhead.js';
import { dispatch } from './dispatch.js';
import { executeTrivial } from './execute-trivial.js';
import { fanout } from './fanout.js';
import { findMissing } from './find-missing.js';
import { memory } from './memory.js';
import { metricsCost } from './metrics.js';
import { reprRunBench } from './repr-run.js';
import { runHash } from './run-hash.js';
import { schedulers } from './schedulers.js';
import { sharedAc } from './shared-ac.js';
import { startup } from './startup.js';
import { tlsCost } from './tls.js';
import { tracingCost } from './tracing.js';
import { workerFailover } from './worker-failover.js';
import type { Benchmark, BenchContext, Metric } from './types.js';

/**
 * `npm run bench [-- NAME ...] [-- --quick]`: runs each benchmark against a
 * real `repr server` process on loopback, prints a table and writes
 * bench/results.json. --quick shrinks every benchmark to a smoke run (the
 * test suite runs it so the benchmarks cannot rot).
 */
const BENCHMARKS: Benchmark[] = [
  byteStream,
  findMissing,
  acHit,
  sharedAc,
  executeTrivial,
  dispatch,
  reprRunBench,
  runHash,
  ccOverhead,
  bazel,
  startup,
  memory,
  tlsCost,
  metricsCost,
  tracingCost,
  workerFailover,
  schedulers,
  autoscale,
  fanout,
  autoscalePool,
];

async function main(): Promise<void> {
  const args = process.argv.slice(2);
  const quick = args.includes('--quick');
  const names = args.filter((a) => !a.startsWith('--'));
  const unknown = names.filter((n) => !BENCHMARKS.some((b) => b.name === n));
  if (unknown.length > 0) {
    console.error(`unknown benchmark(s): ${unknown.join(', ')}; available: ${BENCHMARKS.map((b) => b.name).join(', ')}`);
    process.exit(2);
  }
  const selected = BENCHMARKS.filter((b) => names.length === 0 || names.includes(b.name));
  const ctx: BenchContext = { quick, log: (m) => console.error(`  ${m}`) };
  const results: Record<string, Metric[]> = {};
  for (const b of selected) {
    console.error(`bench ${b.name}: ${b.description}`);
    const t0 = Date.now();
    results[b.name] = await b.run(ctx);
    console.error(`  done in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  }
  printTable(results);
  // A smoke run must not overwrite the numbers of the last real run.
  const file = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'bench', quick ? 'results-quick.json' : 'results.json');
  // Running one benchmark keeps the others' last numbers; each says when it ran.
  let previous: { results?: Record<string, Metric[]>; ran?: Record<string, string> } = {};
  try {
    previous = JSON.parse(readFileSync(file, 'utf8')) as typeof previous;
  } catch {
    /* first run */
  }
  const when = new Date().toISOString();
  const out = {
    when,
    quick,
    machine: {
      cpus: os.cpus().length,
      cpuModel: os.cpus()[0]?.model,
      memGiB: Math.round(os.totalmem() / 2 ** 30),
      node: process.version,
      platform: `${os.platform()} ${os.release()}`,
    },
    ran: { ...previous.ran, ...Object.fromEntries(Object.keys(results).map((k) => [k, when])) },
    results: { ...previous.results, ...results },
  };
  mkdirSync(path.dirname(file), { recursive: true });
  writeFileSync(file, `${JSON.stringify(out, null, 2)}\n`);
  console.error(`wrote ${file}`);
  const missed = Object.values(results)
    .flat()
    .filter((m) => m.target && !m.target.met);
  if (!quick && missed.length > 0) console.error(`targets missed: ${missed.map((m) => m.name).join(', ')}`);
}

function printTable(results: Record<string, Metric[]>): void {
  const rows = [['benchmark', 'metric', 'value', 'unit', 'baseline', 'ratio', 'spread', 'target']];
  for (const [bench, metrics] of Object.entries(results)) {
    for (const m of metrics) {
      rows.push([
        bench,
        m.name,
        String(m.value),
        m.unit,
        m.baseline === undefined ? '' : String(m.baseline),
        m.baseline ? (m.value / m.baseline).toFixed(2) : '',
        m.spread ? `${m.spread[0]}–${m.spread[1]}` : '',
        m.target ? `${m.target.text} ${m.target.met ? 'met' : 'MISSED'}` : '',
      ]);
    }
  }
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  for (const r of rows)
    console.log(
      r
        .map((c, i) => c.padEnd(widths[i]!))
        .join('  ')
        .trimEnd(),
    );
}

main().catch((e: unknown) => {
  console.error(e);
  process.exit(1);
});
