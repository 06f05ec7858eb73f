import { spawn } from 'node:child_process';
import { chmodSync, mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { BwrapSandbox } from '../src/sandbox/bwrap-sandbox.js';
import { ExecClient, uploadAction } from '../src/client/execution-client.js';
import { throughput } from './dispatch.js';
import { withServer } from './server.js';
import { processCpuMs, quantile, round, timeEach } from './stats.js';
import type { Benchmark } from './types.js';

export const executeTrivial: Benchmark = {
  name: 'execute-trivial',
  description: 'Execute of /bin/true with cached inputs, end to end; baselines: spawning it from Node, and the sandbox alone',
  async run(ctx) {
    const n = ctx.quick ? 5 : 60;
    const spawnTimes = await timeEach(() => new Promise((resolve, reject) => spawn('/bin/true').once('exit', resolve).once('error', reject)), n);
    const dir = mkdtempSync(path.join(os.tmpdir(), 'repr-bench-sbx-'));
    chmodSync(dir, 0o777);
    const sandbox = new BwrapSandbox();
    const sandboxTimes = await timeEach(
      () =>
        sandbox.run({
          argv: ['/bin/true'],
          env: {},
          rootDir: dir,
          workingDirectory: '',
          stdoutPath: path.join(dir, '..', `${path.basename(dir)}.out`),
          stderrPath: path.join(dir, '..', `${path.basename(dir)}.err`),
          timeoutMs: 10_000,
          limits: {},
          network: false,
        }),
      n,
    );
    rmSync(dir, { recursive: true, force: true });
    return withServer(async ({ client, server }) => {
      const exec = new ExecClient(server.address);
      try {
        const action = await uploadAction(client, { argv: ['/bin/true'] });
        await exec.execute(action, { skipCacheLookup: true }); // warm-up
        const e2e = await timeEach(() => exec.execute(action, { skipCacheLookup: true }), n);
        // Throughput with every executor busy: distinct actions, several callers.
        const count = ctx.quick ? 8 : 120;
        const before = processCpuMs(server.child.pid!);
        const rate = await throughput(client, exec, count, 8, 't');
        const after = processCpuMs(server.child.pid!);
        const p50 = quantile(e2e, 0.5);
        return [
          {
            name: 'end-to-end p50',
            value: round(p50, 2),
            unit: 'ms',
            baseline: round(quantile(spawnTimes, 0.5), 2),
            spread: [round(Math.min(...e2e), 2), round(Math.max(...e2e), 2)],
            target: { text: '<= 25 ms', met: p50 <= 25 },
          },
          { name: 'end-to-end p99', value: round(quantile(e2e, 0.99), 2), unit: 'ms' },
          { name: 'sandbox alone p50', value: round(quantile(sandboxTimes, 0.5), 2), unit: 'ms', baseline: round(quantile(spawnTimes, 0.5), 2) },
          { name: 'throughput, all executors busy', value: round(rate, 1), unit: 'actions/s' },
          // The server's own CPU (scheduling, staging, output collection) and its children's (bwrap and the action).
          { name: 'server CPU per action', value: round((after.self - before.self) / count, 1), unit: 'ms' },
          { name: 'sandbox CPU per action', value: round((after.children - before.children) / count, 1), unit: 'ms' },
        ];
      } finally {
        exec.close();
      }
    });
  },
};
