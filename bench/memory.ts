import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { computeDigest, SHA256 } from '../src/common/digest.js';
import { ReapiClient } from '../src/reapi/reapi-client.js';
import { seedDiskStore } from '../support/seed-store.js';
import { removeInBackground } from '../support/tmp.js';
import { spawnServer, type ServerProcess, waitForLog } from '../support/spawn-server.js';
import { round } from './stats.js';
import type { Benchmark } from './types.js';

function rssMiB(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  if (!m) throw new Error(`no VmRSS for pid ${pid}`);
  return Number(m[1]) / 1024;
}

/** RSS after the process has had a moment to settle. */
async function settledRss(p: ServerProcess): Promise<number> {
  await new Promise((r) => setTimeout(r, 1500));
  return rssMiB(p.child.pid!);
}

/** Random 32-byte blobs. */
function blobs(n: number): { digest: ReturnType<typeof computeDigest>; data: Buffer }[] {
  return Array.from({ length: n }, () => {
    const data = randomBytes(32);
    return { digest: computeDigest(SHA256, data), data };
  });
}

/**
 * Server RSS idle (the baseline) and with 1,000,000 small blobs in its CAS
 * index, seeded offline (see seedDiskStore); an upload of a smaller set
 * through BatchUpdateBlobs gives the API's rate.
 */
export const memory: Benchmark = {
  name: 'memory',
  description: 'server RSS idle and with 1,000,000 small blobs indexed; time to listen and to index them at start; BatchUpdateBlobs rate',
  async run(ctx) {
    const total = ctx.quick ? 5_000 : 1_000_000;
    const uploads = ctx.quick ? 2_000 : 40_000;
    const dataDir = mkdtempSync(path.join(os.tmpdir(), 'repr-bench-mem-'));
    const args = ['--data-dir', dataDir, '--cas-size', '50GiB', '--cache-only'];
    try {
      let server = await spawnServer(args);
      const idle = await settledRss(server);
      const client = new ReapiClient({ target: server.address });
      const t = performance.now();
      for (let i = 0; i < uploads; i += 4000) {
        const res = await client.batchUpdate(blobs(Math.min(4000, uploads - i)));
        const bad = res.find((r) => r.code !== 0);
        if (bad) throw new Error(`upload failed: ${bad.message}`);
      }
      const uploadRate = uploads / ((performance.now() - t) / 1000);
      client.close();
      await server.stop();

      seedDiskStore(path.join(dataDir, 'cas'), total, ctx.log);

      const t2 = performance.now();
      server = await spawnServer(args, 900_000);
      const startS = (performance.now() - t2) / 1000;
      // The index is built after listening; RSS counts only once it is complete.
      await waitForLog(server, (rec) => rec.msg === 'CAS indexed', 900_000);
      const indexS = (performance.now() - t2) / 1000;
      const indexed = await settledRss(server);
      // The index answers: every seeded blob counts as present.
      const probe = new ReapiClient({ target: server.address });
      const missing = await probe.findMissing(blobs(10).map((b) => b.digest));
      probe.close();
      await server.stop();
      if (missing.length !== 10) throw new Error('the index claims random blobs exist');
      const n = (total + uploads).toLocaleString('en-US');
      return [
        { name: 'RSS idle', value: round(idle, 1), unit: 'MiB' },
        { name: `RSS with ${n} blobs indexed`, value: round(indexed, 1), unit: 'MiB', baseline: round(idle, 1) },
        { name: 'index cost per blob', value: round(((indexed - idle) * 1024 * 1024) / (total + uploads), 0), unit: 'bytes' },
        { name: `start until listening, ${n} blobs on disk`, value: round(startS, 2), unit: 's' },
        { name: `start until indexed, ${n} blobs on disk`, value: round(indexS, 2), unit: 's' },
        { name: 'BatchUpdateBlobs of 32-byte blobs', value: round(uploadRate, 0), unit: 'blobs/s' },
      ];
    } finally {
      // Runs on after the benchmark ends, so benchmarks after this one share the disk with it.
      removeInBackground(dataDir);
    }
  },
};
