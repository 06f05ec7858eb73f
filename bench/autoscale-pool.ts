import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { ExecClient, uploadAction } from '../src/client/execution-client.js';
import type { Digest } from '../src/common/digest.js';
import { ReapiClient } from '../src/reapi/reapi-client.js';
import { fetchStatus, startServerProcess } from '../support/servers.js';
import { tmpDir } from '../support/tmp.js';
import { round, summary } from './stats.js';
import type { Benchmark, Metric } from './types.js';

const TICK_S = 0.5;

/**
 * One round: a server whose process pool sits at its minimum of 1 gets a
 * burst of long actions; times from the burst to the decision to grow (the
 * controller) and to the 4th worker registered (that plus starting three
 * `repr worker` processes). The up cooldown is 0, so no wait for it counts.
 */
async function burstToFour(actions: number): Promise<{ decided: number; registered: number }> {
  const dataDir = tmpDir('repr-bench-autoscale-');
  const config = path.join(tmpDir('repr-bench-autoscale-conf-'), 'server.json');
  writeFileSync(
    config,
    JSON.stringify({
      autoscale: {
        enabled: true,
        tickSeconds: TICK_S,
        pools: [
          {
            name: 'bench',
            provider: { type: 'process', executors: 1, drainTimeoutSeconds: 1 },
            minWorkers: 1,
            maxWorkers: 4,
            scaleUpCooldownSeconds: 0,
          },
        ],
      },
    }),
  );
  const server = await startServerProcess(['--config', config, '--data-dir', dataDir, '--executors', '0']);
  const client = new ReapiClient({ target: server.address });
  const exec = new ExecClient(server.address);
  try {
    for (;;) {
      const s = await fetchStatus(server.url);
      if (s.workers.length === 1 && s.autoscalePools[0]?.starting === 0) break;
      await new Promise((r) => setTimeout(r, 50));
    }
    const digests: Digest[] = [];
    for (let i = 0; i < actions; i++) digests.push(await uploadAction(client, { argv: ['/bin/sh', '-c', `sleep 2; echo ${i}`], doNotCache: true }));
    const burst = Date.now();
    const pending = digests.map((d) => exec.execute(d).catch(() => undefined));
    let decided = Number.NaN;
    for (;;) {
      const s = await fetchStatus(server.url);
      const p = s.autoscalePools[0]!;
      if (Number.isNaN(decided) && p.lastChangeDirection === 'up' && p.desired === 4 && p.lastChange)
        decided = p.lastChange.seconds * 1000 + p.lastChange.nanos / 1e6 - burst;
      if (s.workers.length === 4) break;
      await new Promise((r) => setTimeout(r, 20));
    }
    // The server's own line for each registration, to the millisecond.
    const connected = server.logs
      .flatMap((l) => {
        try {
          return [JSON.parse(l) as { msg?: string; time?: string }];
        } catch {
          return [];
        }
      })
      .filter((r) => r.msg === 'worker connected' && typeof r.time === 'string')
      .map((r) => Date.parse(r.time!));
    const registered = Math.max(...connected) - burst;
    void Promise.all(pending);
    return { decided, registered };
  } finally {
    client.close();
    exec.close();
    // SIGTERM: the server stops the workers it started before it exits.
    await server.stop();
  }
}

export const autoscalePool: Benchmark = {
  name: 'autoscale-pool',
  description:
    'scale-up latency of the process provider: from a burst of 200 actions on a pool of 1 to the decision to grow to 4, and to the 4th worker registered',
  async run(ctx) {
    const rounds = ctx.quick ? 1 : 3;
    const decided: number[] = [];
    const registered: number[] = [];
    for (let r = 0; r < rounds; r++) {
      // A smoke run needs only enough load for 4 workers: 20 actions, and less time uploading them.
      const t = await burstToFour(ctx.quick ? 20 : 200);
      ctx.log(`round ${r + 1}: decided after ${round(t.decided)} ms, 4th worker registered after ${round(t.registered)} ms`);
      decided.push(t.decided);
      registered.push(t.registered);
    }
    const d = summary(decided);
    const w = summary(registered);
    const metrics: Metric[] = [
      { name: `burst → decision to grow (median, tick ${TICK_S} s)`, value: round(d.median), unit: 'ms', spread: [round(d.min), round(d.max)] },
      { name: 'burst → 4th worker registered (median)', value: round(w.median), unit: 'ms', spread: [round(w.min), round(w.max)] },
    ];
    return metrics;
  },
};
