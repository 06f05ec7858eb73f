import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ExecClient, uploadAction } from '../src/client/execution-client.js';
import { waitForStatus } from '../src/client/status-client.js';
import type { ReapiClient } from '../src/reapi/reapi-client.js';
import { spawnWorker, type WorkerProcess } from '../support/spawn-server.js';
import { withServer } from './server.js';
import { quantile, round, timeEach } from './stats.js';
import type { Benchmark, Metric } from './types.js';

/** Actions/s for `count` distinct /bin/true actions pushed by `callers` concurrent Execute calls. */
export async function throughput(client: ReapiClient, exec: ExecClient, count: number, callers: number, tag: string): Promise<number> {
  const actions = await Promise.all(Array.from({ length: count }, (_, i) => uploadAction(client, { argv: ['/bin/true'], salt: `${tag}-${i}` })));
  const t = performance.now();
  let next = 0;
  await Promise.all(
    Array.from({ length: callers }, async () => {
      while (next < actions.length) await exec.execute(actions[next++]!, { skipCacheLookup: true });
    }),
  );
  return actions.length / ((performance.now() - t) / 1000);
}

async function latencies(client: ReapiClient, exec: ExecClient, n: number, tag: string): Promise<number[]> {
  const action = await uploadAction(client, { argv: ['/bin/true'], salt: tag });
  await exec.execute(action, { skipCacheLookup: true }); // warm-up: inputs in the worker's cache
  return timeEach(() => exec.execute(action, { skipCacheLookup: true }), n);
}

/**
 * Dispatch through standalone workers: a scheduler with no executors of its
 * own and 1 or 3 `repr worker` processes (2 executors each), against the
 * all-in-one server's built-in executors as the baseline, with the same
 * trivial action. On this 2-core machine every setup is bound by the
 * sandbox's CPU cost; the ratio shows what the worker protocol adds.
 */
export const dispatch: Benchmark = {
  name: 'dispatch',
  description: 'Execute of /bin/true through standalone workers (1 and 3, 2 executors each) vs built-in executors: actions/s and p50 latency',
  async run(ctx) {
    const count = ctx.quick ? 6 : 150;
    const n = ctx.quick ? 3 : 40;
    const callers = 12;
    const builtin = await withServer(
      async ({ client, server }) => {
        const exec = new ExecClient(server.address);
        try {
          return { lat: await latencies(client, exec, n, 'builtin'), rate: await throughput(client, exec, count, callers, 'builtin') };
        } finally {
          exec.close();
        }
      },
      ['--executors', '2'],
    );
    const viaWorkers = async (workers: number) =>
      withServer(
        async ({ client, server }) => {
          const dirs: string[] = [];
          const procs: WorkerProcess[] = [];
          const exec = new ExecClient(server.address);
          try {
            for (let i = 0; i < workers; i++) {
              const dir = mkdtempSync(path.join(os.tmpdir(), 'repr-bench-worker-'));
              dirs.push(dir);
              procs.push(await spawnWorker(server.url, ['--name', `bench-${i}`, '--executors', '2', '--data-dir', dir]));
            }
            await waitForStatus(server.url, (s) => s.workers.length === workers);
            ctx.log(`${workers} worker(s) registered`);
            return { lat: await latencies(client, exec, n, `w${workers}`), rate: await throughput(client, exec, count, callers, `w${workers}`) };
          } finally {
            exec.close();
            for (const p of procs) await p.stop();
            for (const d of dirs) rmSync(d, { recursive: true, force: true });
          }
        },
        ['--executors', '0'],
      );
    const one = await viaWorkers(1);
    const three = await viaWorkers(3);
    const p50 = (xs: number[]) => round(quantile(xs, 0.5), 2);
    const spread = (xs: number[]): [number, number] => [round(Math.min(...xs), 2), round(Math.max(...xs), 2)];
    const metrics: Metric[] = [
      { name: 'built-in executors (2): throughput', value: round(builtin.rate, 1), unit: 'actions/s' },
      { name: '1 worker (2 executors): throughput', value: round(one.rate, 1), unit: 'actions/s', baseline: round(builtin.rate, 1) },
      { name: '3 workers (6 executors): throughput', value: round(three.rate, 1), unit: 'actions/s', baseline: round(builtin.rate, 1) },
      { name: 'built-in executor: latency p50', value: p50(builtin.lat), unit: 'ms', spread: spread(builtin.lat) },
      { name: '1 worker: latency p50', value: p50(one.lat), unit: 'ms', baseline: p50(builtin.lat), spread: spread(one.lat) },
      { name: '3 workers: latency p50', value: p50(three.lat), unit: 'ms', baseline: p50(builtin.lat), spread: spread(three.lat) },
    ];
    return metrics;
  },
};
