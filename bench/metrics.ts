import { metricValue, scrapeMetrics } from '../support/metrics.js';
import { seedAcHits, timeAcHits } from './ac-hit.js';
import { seedFindMissing, timeFindMissing } from './find-missing.js';
import { withServer } from './server.js';
import { median, processCpuMs, round, summary } from './stats.js';
import type { Benchmark, Metric } from './types.js';

/**
 * What metrics cost on the two hottest paths: GetActionResult hits and
 * FindMissingBlobs, against two servers of one run, one with metrics (the
 * endpoint on, so the call interceptor and the counters are installed) and
 * one without, alternating so that both see the same machine load. Besides
 * client-side throughput and latency, the server's own CPU time per AC hit,
 * which other tenants of a shared machine move far less.
 */
export const metricsCost: Benchmark = {
  name: 'metrics',
  description: 'AC hits and FindMissingBlobs with metrics on vs off, two servers in the same run, alternating',
  async run(ctx) {
    const rounds = ctx.quick ? 1 : 5;
    const acMs = ctx.quick ? 300 : 3000;
    const n = ctx.quick ? 1000 : 10_000;
    const fmReps = ctx.quick ? 3 : 20;
    return withServer((off) =>
      withServer(
        async (on) => {
          const servers = { on, off };
          const digests = { on: await seedFindMissing(on.client, n), off: await seedFindMissing(off.client, n) };
          const actions = { on: await seedAcHits(on.client), off: await seedAcHits(off.client) };
          const rate = { on: [] as number[], off: [] as number[] };
          const cpu = { on: [] as number[], off: [] as number[] };
          const fm = { on: [] as number[], off: [] as number[] };
          for (let i = 0; i < rounds; i++) {
            for (const k of i % 2 === 0 ? (['on', 'off'] as const) : (['off', 'on'] as const)) {
              const pid = servers[k].server.child.pid!;
              const before = processCpuMs(pid).self;
              const hits = await timeAcHits(servers[k].client, actions[k], acMs, 64);
              cpu[k].push(((processCpuMs(pid).self - before) * 1000) / hits.latencies.length);
              rate[k].push(hits.rate);
              fm[k].push(median(await timeFindMissing(servers[k].client, digests[k], fmReps)));
              ctx.log(
                `round ${i + 1} metrics ${k}: AC hits ${Math.round(rate[k].at(-1)!)}/s, ${round(cpu[k].at(-1)!)} µs server CPU each; FindMissing ${n} p50 ${round(fm[k].at(-1)!, 2)} ms`,
              );
            }
          }
          // The "on" server really counted: otherwise this would compare two servers without metrics.
          const counted = metricValue(
            await scrapeMetrics(on.server),
            'repr_grpc_server_handling_seconds_count{method="/build.bazel.remote.execution.v2.ActionCache/GetActionResult",code="OK"}',
          );
          if (!(counted > 0)) throw new Error('the server with metrics counted no GetActionResult calls');
          const mk = (
            name: string,
            s: { on: number[]; off: number[] },
            unit: string,
            digits: number,
            target: (ratio: number) => boolean,
            text: string,
          ): Metric => {
            const t = summary(s.on);
            const base = median(s.off);
            return {
              name,
              value: round(t.median, digits),
              unit,
              baseline: round(base, digits),
              spread: [round(t.min, digits), round(t.max, digits)],
              target: { text, met: target(t.median / base) },
            };
          };
          return [
            mk('GetActionResult hits, 64 callers, metrics on (baseline: off)', rate, 'req/s', 0, (r) => r >= 0.95, 'ratio >= 0.95'),
            mk('server CPU per AC hit, metrics on (baseline: off)', cpu, 'µs', 1, (r) => r <= 1.05, 'ratio <= 1.05'),
            mk(`FindMissingBlobs ${n} digests p50, metrics on (baseline: off)`, fm, 'ms', 2, (r) => r <= 1.05, 'ratio <= 1.05'),
          ];
        },
        ['--metrics-listen', '127.0.0.1:0'],
      ),
    );
  },
};
