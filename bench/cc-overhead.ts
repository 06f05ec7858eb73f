import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { REPR_BIN } from '../support/spawn-server.js';
import { withServer } from './server.js';
import { median, round, timedCommand } from './stats.js';
import type { Benchmark, Metric } from './types.js';

/**
 * What `repr cc` adds to one compile: a trivial `gcc -c` locally against
 * the same compile wrapped in `repr cc` through a warm daemon (started by
 * the first, untimed, command), alternating so that the machine's load
 * drifts over both alike. The wrapper's own start (Node, exec-main and the
 * protocol module, no daemon) is measured apart with `repr cc --help`, and
 * what is left is the daemon's round trip plus the executor's setup.
 */
export const ccOverhead: Benchmark = {
  name: 'cc-overhead',
  description: 'per-command overhead of `repr cc gcc -c` through a warm daemon vs the compile itself',
  async run(ctx) {
    const reps = ctx.quick ? 2 : 20;
    const base = mkdtempSync(path.join(os.tmpdir(), 'repr-bench-cc-'));
    try {
      writeFileSync(path.join(base, 't.c'), 'int answer(void) { return 42; }\n');
      const compile = ['gcc', '-O2', '-c', 't.c', '-o', 't.o'];
      return await withServer(
        async ({ server }) => {
          const env = { ...process.env, REPR_SERVER: server.url, XDG_RUNTIME_DIR: path.join(base, 'run') };
          const wrapped = [REPR_BIN, 'cc', ...compile];
          try {
            await timedCommand(process.execPath, wrapped, base, env);
            const local: number[] = [];
            const remote: number[] = [];
            const client: number[] = [];
            for (let i = 0; i < reps; i++) {
              local.push(await timedCommand(compile[0]!, compile.slice(1), base, env));
              remote.push(await timedCommand(process.execPath, wrapped, base, env));
              client.push(await timedCommand(process.execPath, [REPR_BIN, 'cc', '--help'], base, env));
            }
            const l = median(local);
            const r = median(remote);
            const c = median(client);
            ctx.log(`gcc -c ${round(l)} ms, repr cc gcc -c ${round(r)} ms, repr cc --help ${round(c)} ms (p50 of ${reps})`);
            const metrics: Metric[] = [
              { name: 'gcc -c (local)', value: round(l), unit: 'ms', spread: [round(Math.min(...local)), round(Math.max(...local))] },
              {
                name: 'repr cc gcc -c (warm daemon)',
                value: round(r),
                unit: 'ms',
                baseline: round(l),
                spread: [round(Math.min(...remote)), round(Math.max(...remote))],
              },
              {
                name: 'overhead per command (p50 difference)',
                value: round(r - l),
                unit: 'ms',
                target: { text: '<= 30 ms on a quiet machine', met: r - l <= 30 },
              },
              { name: 'of which the wrapper starting (repr cc --help)', value: round(c), unit: 'ms' },
            ];
            return metrics;
          } finally {
            spawnSync(process.execPath, [REPR_BIN, 'daemon', 'stop'], { env, stdio: 'ignore' });
          }
        },
        ['--executors', '2'],
      );
    } finally {
      rmSync(base, { recursive: true, force: true });
    }
  },
};
