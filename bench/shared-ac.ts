import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { ReapiClient } from '../src/reapi/reapi-client.js';
import { startPostgres } from '../support/postgres.js';
import { spawnServer } from '../support/spawn-server.js';
import { tmpDir } from '../support/tmp.js';
import { seedAcHits, timeAcHits } from './ac-hit.js';
import { withServer } from './server.js';
import { median, round, summary } from './stats.js';
import type { Benchmark } from './types.js';

/**
 * What sharing the cache costs a hit: GetActionResult against a server whose
 * action cache is a PostgreSQL table and whose CAS is a cache-only node (each
 * hit a query plus a FindMissingBlobs to the node), against a server with its
 * own local stores, in alternating rounds so that both see the same load.
 */
export const sharedAc: Benchmark = {
  name: 'shared-ac',
  description: 'GetActionResult hits, 64 callers: postgres action cache + --cas node vs local stores, alternating',
  async run(ctx) {
    const rounds = ctx.quick ? 1 : 5;
    const ms = ctx.quick ? 300 : 3000;
    const db = await startPostgres();
    const node = await spawnServer(['--data-dir', tmpDir('repr-bench-node-'), '--cache-only']);
    const config = path.join(tmpDir('repr-bench-conf-'), 'server.json');
    writeFileSync(config, JSON.stringify({ storage: { ac: { type: 'postgres', url: db.url } } }));
    const shared = await spawnServer(['--data-dir', tmpDir('repr-bench-shared-'), '--config', config, '--cas', node.url]);
    const sharedClient = new ReapiClient({ target: shared.address });
    try {
      return await withServer(async (local) => {
        const clients = { shared: sharedClient, local: local.client };
        // A smoke run only proves the scenario works: a few entries, not a build's worth, each a round trip to every store.
        const entries = ctx.quick ? 16 : 256;
        const actions = { shared: await seedAcHits(sharedClient, entries), local: await seedAcHits(local.client, entries) };
        const rate = { shared: [] as number[], local: [] as number[] };
        const p50 = { shared: [] as number[], local: [] as number[] };
        for (let i = 0; i < rounds; i++) {
          for (const k of i % 2 === 0 ? (['shared', 'local'] as const) : (['local', 'shared'] as const)) {
            const hits = await timeAcHits(clients[k], actions[k], ms, 64);
            rate[k].push(hits.rate);
            p50[k].push(median(hits.latencies));
            ctx.log(`round ${i + 1} ${k}: ${Math.round(hits.rate)} hits/s, p50 ${round(p50[k].at(-1)!, 2)} ms`);
          }
        }
        const r = summary(rate.shared);
        const l = summary(p50.shared);
        return [
          {
            name: 'AC hits, postgres + CAS node (baseline: local)',
            value: Math.round(r.median),
            unit: 'req/s',
            baseline: Math.round(median(rate.local)),
            spread: [Math.round(r.min), Math.round(r.max)],
          },
          {
            name: 'AC hit p50, postgres + CAS node (baseline: local)',
            value: round(l.median, 2),
            unit: 'ms',
            baseline: round(median(p50.local), 2),
            spread: [round(l.min, 2), round(l.max, 2)],
          },
        ];
      });
    } finally {
      sharedClient.close();
      await shared.stop();
      await node.stop();
      db.stop();
    }
  },
};
