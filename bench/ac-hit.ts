import { randomBytes } from 'node:crypto';
import { computeDigest, type Digest, SHA256, toWire } from '../src/common/digest.js';
import { ActionResult } from '../src/proto/build/bazel/remote/execution/v2/remote_execution.js';
import type { ReapiClient } from '../src/reapi/reapi-client.js';
import { withServer } from './server.js';
import { quantile, round } from './stats.js';
import type { Benchmark } from './types.js';

/**
 * Latencies of GetActionResult hits from `callers` concurrent callers over
 * `durationMs`, after filling 256 entries and reading each once (as a build's
 * earlier lookups would: otherwise the callers, each walking the keys from its
 * own offset, all miss the memory tier together and time the disk instead).
 */
export async function acHits(client: ReapiClient, durationMs: number, callers: number): Promise<{ latencies: number[]; rate: number }> {
  return timeAcHits(client, await seedAcHits(client), durationMs, callers);
}

/** Fills `count` action-cache entries and reads each once; returns their action digests. */
export async function seedAcHits(client: ReapiClient, count = 256): Promise<Digest[]> {
  const out = randomBytes(100);
  await client.write(computeDigest(SHA256, out), out);
  const actions = Array.from({ length: count }, () => computeDigest(SHA256, randomBytes(32)));
  for (const a of actions) {
    await client.updateActionResult(a, ActionResult.fromPartial({ outputFiles: [{ path: 'o', digest: toWire(computeDigest(SHA256, out)) }], exitCode: 0 }));
  }
  for (const a of actions) await client.getActionResult(a);
  return actions;
}

/** GetActionResult hits of `actions` (seeded) from `callers` concurrent callers over `durationMs`. */
export async function timeAcHits(client: ReapiClient, actions: Digest[], durationMs: number, callers: number): Promise<{ latencies: number[]; rate: number }> {
  const latencies: number[] = [];
  const end = performance.now() + durationMs;
  const start = performance.now();
  await Promise.all(
    Array.from({ length: callers }, async (_, c) => {
      for (let i = c; performance.now() < end; i++) {
        const t = performance.now();
        await client.getActionResult(actions[i % actions.length]!);
        latencies.push(performance.now() - t);
      }
    }),
  );
  return { latencies, rate: latencies.length / ((performance.now() - start) / 1000) };
}

export const acHit: Benchmark = {
  name: 'ac-hit',
  description: 'GetActionResult hits from 64 concurrent callers',
  async run(ctx) {
    const durationMs = ctx.quick ? 500 : 5000;
    const callers = 64;
    return withServer(async ({ client }) => {
      const { latencies, rate } = await acHits(client, durationMs, callers);
      ctx.log(`${latencies.length} calls`);
      return [
        { name: 'throughput', value: Math.round(rate), unit: 'req/s', target: { text: '>= 5000 req/s', met: rate >= 5000 } },
        { name: 'p50', value: round(quantile(latencies, 0.5), 2), unit: 'ms' },
        { name: 'p99', value: round(quantile(latencies, 0.99), 2), unit: 'ms' },
      ];
    });
  },
};
