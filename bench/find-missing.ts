import { randomBytes } from 'node:crypto';
import { computeDigest, type Digest, SHA256, toWire } from '../src/common/digest.js';
import type { ReapiClient } from '../src/reapi/reapi-client.js';
import { withServer } from './server.js';
import { quantile, round } from './stats.js';
import type { Benchmark } from './types.js';

/** Uploads `n` small blobs' worth of digests, half of them present; returns the digests to ask about. */
export async function seedFindMissing(client: ReapiClient, n: number): Promise<Digest[]> {
  const blobs = Array.from({ length: n }, () => randomBytes(64));
  const digests: Digest[] = blobs.map((b) => computeDigest(SHA256, b));
  // Upload half, in batches.
  for (let i = 0; i < n / 2; i += 500) {
    const reqs = blobs.slice(i, Math.min(i + 500, n / 2)).map((b, j) => ({ digest: toWire(digests[i + j]!), data: b, compressor: 0 }));
    await new Promise<void>((resolve, reject) =>
      client.cas.batchUpdateBlobs({ instanceName: '', requests: reqs, digestFunction: 0 }, (err) => (err ? reject(err) : resolve())),
    );
  }
  return digests;
}

/** Milliseconds of each of `reps` FindMissingBlobs calls over `digests` (half of them missing). */
export async function timeFindMissing(client: ReapiClient, digests: Digest[], reps: number): Promise<number[]> {
  const times: number[] = [];
  for (let i = 0; i < reps; i++) {
    const t = performance.now();
    const missing = await client.findMissing(digests);
    times.push(performance.now() - t);
    if (missing.length !== digests.length / 2) throw new Error(`expected ${digests.length / 2} missing, got ${missing.length}`);
  }
  return times;
}

export const findMissing: Benchmark = {
  name: 'find-missing',
  description: 'FindMissingBlobs of 10,000 digests, half of them present',
  async run(ctx) {
    const n = ctx.quick ? 1000 : 10_000;
    const reps = ctx.quick ? 5 : 50;
    return withServer(async ({ client }) => {
      const times = await timeFindMissing(client, await seedFindMissing(client, n), reps);
      const p50 = quantile(times, 0.5);
      return [
        {
          name: `p50 ${n} digests`,
          value: round(p50, 2),
          unit: 'ms',
          spread: [round(Math.min(...times), 2), round(Math.max(...times), 2)],
          target: { text: '<= 20 ms', met: p50 <= 20 },
        },
        { name: `p99 ${n} digests`, value: round(quantile(times, 0.99), 2), unit: 'ms' },
      ];
    });
  },
};
