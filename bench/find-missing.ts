import { randomBytes } from 'node:crypto';
import { computeDigest, type Digest, SHA256, toWire } from '../src/common/digest.js';
import { withServer } from './server.js';
import { quantile, round } from './stats.js';
import type { Benchmark } from './types.js';

export const findMissing: Benchmark = {
  name: 'find-missing',
  description: 'FindMissingBlobs of 10,000 digests, half of them present',
  async run(ctx) {
    const n = ctx.quick ? 1000 : 10_000;
    const reps = ctx.quick ? 5 : 50;
    return withServer(async ({ client }) => {
      const blobs = Array.from({ length: n }, () => randomBytes(64));
      const digests: Digest[] = blobs.map((b) => computeDigest(SHA256, b));
      // Upload half, in batches.
      for (let i = 0; i < n / 2; i += 500) {
        const reqs = blobs.slice(i, Math.min(i + 500, n / 2)).map((b, j) => ({ digest: toWire(digests[i + j]!), data: b, compressor: 0 }));
        await new Promise<void>((resolve, reject) =>
          client.cas.batchUpdateBlobs({ instanceName: '', requests: reqs, digestFunction: 0 }, (err) => (err ? reject(err) : resolve())),
        );
      }
      const times: number[] = [];
      for (let i = 0; i < reps; i++) {
        const t = performance.now();
        const missing = await client.findMissing(digests);
        times.push(performance.now() - t);
        if (missing.length !== n / 2) throw new Error(`expected ${n / 2} missing, got ${missing.length}`);
      }
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
