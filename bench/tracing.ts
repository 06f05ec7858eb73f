import { startOtlpReceiver } from '../support/otlp-receiver.js';
import { acHits } from './ac-hit.js';
import { withServer } from './server.js';
import { quantile, round, summary } from './stats.js';
import type { Benchmark } from './types.js';

/**
 * What tracing costs a hot path: GetActionResult hits (one SERVER span each)
 * from 64 callers against two servers of one run, one tracing every call to
 * an OTLP receiver in this process and one with tracing off, alternating so
 * that both see the same machine load.
 */
export const tracingCost: Benchmark = {
  name: 'tracing',
  description: 'GetActionResult hits with every call traced (OTLP/HTTP) vs tracing off, two servers in the same run, alternating',
  async run(ctx) {
    const reps = ctx.quick ? 1 : 5;
    const ms = ctx.quick ? 300 : 3000;
    const rx = await startOtlpReceiver();
    try {
      return await withServer((off) =>
        withServer(
          async (on) => {
            const rate = { off: [] as number[], on: [] as number[] };
            const p50 = { off: [] as number[], on: [] as number[] };
            const clients = { off: off.client, on: on.client };
            for (let i = 0; i < reps; i++) {
              for (const k of i % 2 === 0 ? (['off', 'on'] as const) : (['on', 'off'] as const)) {
                const r = await acHits(clients[k], ms, 64);
                rate[k].push(r.rate);
                p50[k].push(quantile(r.latencies, 0.5));
                ctx.log(`rep ${i + 1} tracing ${k}: ${Math.round(r.rate)} hits/s, p50 ${round(p50[k].at(-1)!, 2)} ms`);
              }
            }
            const rateOn = summary(rate.on);
            const p50On = summary(p50.on);
            ctx.log(`${rx.spans.length} spans received`);
            return [
              {
                name: 'GetActionResult hits, 64 callers, traced (baseline: tracing off)',
                value: Math.round(rateOn.median),
                unit: 'req/s',
                baseline: Math.round(summary(rate.off).median),
                spread: [Math.round(rateOn.min), Math.round(rateOn.max)],
              },
              { name: 'p50 latency, traced (baseline: tracing off)', value: round(p50On.median, 2), unit: 'ms', baseline: round(summary(p50.off).median, 2) },
            ];
          },
          ['--otlp-endpoint', rx.url],
        ),
      );
    } finally {
      await rx.close();
    }
  },
};
