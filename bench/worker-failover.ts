import { startServerProcess, type ServerProcess } from '../support/servers.js';
import { spawnRepr, type WorkerProcess } from '../support/spawn-server.js';
import { tmpDir } from '../support/tmp.js';
import { round, summary } from './stats.js';
import type { Benchmark, Metric } from './types.js';

/** The scheduler of each 'registered with the scheduler' line the worker logged, in order. */
function registrations(worker: WorkerProcess): string[] {
  return worker.logs.flatMap((l) => {
    try {
      const rec = JSON.parse(l) as { msg?: string; scheduler?: string };
      return rec.msg === 'registered with the scheduler' && rec.scheduler ? [rec.scheduler] : [];
    } catch {
      return [];
    }
  });
}

async function nextRegistration(worker: WorkerProcess, after: number, timeoutMs = 60_000): Promise<string> {
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    const seen = registrations(worker);
    if (seen.length > after) return seen[after]!;
    if (performance.now() > deadline) throw new Error(`the worker did not register again in ${timeoutMs} ms:\n${worker.logs.join('')}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

/**
 * A worker given `count` schedulers: each round SIGKILLs the one it works
 * for and times until it registers again. With one scheduler, that one is
 * restarted at once on its port (all a worker could do before it had a
 * list); with two, the worker moves to the other and the killed one is
 * restarted only afterwards, for the next round.
 */
async function killToRegistered(count: number, rounds: number): Promise<number[]> {
  const servers: ServerProcess[] = [];
  const dirs: string[] = [];
  let worker: WorkerProcess | undefined;
  try {
    for (let i = 0; i < count; i++) {
      dirs.push(tmpDir('repr-bench-failover-'));
      servers.push(await startServerProcess(['--data-dir', dirs[i]!, '--executors', '0']));
    }
    const restart = (i: number) => startServerProcess(['--data-dir', dirs[i]!, '--executors', '0', '--listen', servers[i]!.address]);
    const args = servers.flatMap((s) => ['--scheduler', s.url]);
    worker = await spawnRepr(
      ['worker', ...args, '--executors', '1', '--data-dir', tmpDir('repr-bench-failover-w-'), '--name', `bench-failover-${count}`],
      (rec) => rec.msg === 'registered with the scheduler',
      30_000,
    );
    const times: number[] = [];
    for (let r = 0; r < rounds; r++) {
      const seen = registrations(worker);
      const on = servers.findIndex((s) => s.url === seen[seen.length - 1]);
      const t0 = performance.now();
      await servers[on]!.stop('SIGKILL');
      const back = count === 1 ? restart(on) : undefined;
      await nextRegistration(worker, seen.length);
      times.push(performance.now() - t0);
      servers[on] = await (back ?? restart(on));
    }
    return times;
  } finally {
    await worker?.stop('SIGKILL');
    for (const s of servers) await s.stop('SIGKILL');
  }
}

export const workerFailover: Benchmark = {
  name: 'worker-failover',
  description: "from SIGKILL of a worker's scheduler to the worker registered again: moving to a second scheduler vs the one scheduler restarted at once",
  async run(ctx) {
    const rounds = ctx.quick ? 1 : 15;
    const two = summary(await killToRegistered(2, rounds));
    ctx.log(`two schedulers: median ${round(two.median)} ms over ${two.n} kills`);
    const one = summary(await killToRegistered(1, rounds));
    ctx.log(`one scheduler, restarted at once: median ${round(one.median)} ms over ${one.n} kills`);
    const metric: Metric = {
      name: 'kill → registered again (median)',
      value: round(two.median),
      unit: 'ms',
      baseline: round(one.median),
      spread: [round(two.min), round(two.max)],
      target: { text: '< 1000 ms', met: two.median < 1000 },
    };
    return [metric];
  },
};
