import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { ExecClient, type Observed, uploadAction } from '../../src/client/execution-client.js';
import { fromWire, SHA256 } from '../../src/common/digest.js';
import { Code } from '../../src/common/errors.js';
import { ExecutionStage_Value } from '../../src/proto/build/bazel/remote/execution/v2/remote_execution.js';
import type { GetStatusResponse } from '../../src/proto/repr/worker/v1/worker.js';
import { ReapiClient } from '../../src/reapi/reapi-client.js';
import { fetchStatus, type ServerProcess, startServerProcess, waitForStatus } from '../../support/servers.js';
import { tmpDir } from '../../support/tmp.js';
import { metricValue, scrapeMetrics } from '../../support/metrics.js';
import { REPR_BIN } from '../../support/spawn-server.js';

/** JSON log lines of a process or a file, the ones that parse. */
function records(lines: Iterable<string>): Record<string, unknown>[] {
  const out: Record<string, unknown>[] = [];
  for (const line of lines) {
    try {
      out.push(JSON.parse(line) as Record<string, unknown>);
    } catch {
      /* not a log line */
    }
  }
  return out;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

const pool = (s: GetStatusResponse) => s.autoscalePools[0]!;
const millis = (t: { seconds: number; nanos: number } | undefined) => (t ? t.seconds * 1000 + t.nanos / 1e6 : Number.NaN);

// The seed's cooldowns (30 s up, 2 min down) would make this test take minutes
// and say nothing more: the cooldowns are the policy's, tested on a fake clock
// there. Shorter ones exercise the same controller in real time: growth within
// 2 s (+ a 0.5 s tick) of a burst, then a scale-down every 6 s (of two workers
// while the forecast is far below the pool, as it is once the burst is done).
const UP_COOLDOWN_S = 2;
const DOWN_COOLDOWN_S = 6;
const TICK_S = 0.5;

describe('autoscaling with the process provider', () => {
  let server: ServerProcess;
  let dataDir: string;
  let client: ReapiClient;
  let exec: ExecClient;

  before(async () => {
    dataDir = tmpDir('repr-autoscale-');
    const config = path.join(tmpDir('repr-autoscale-conf-'), 'server.json');
    writeFileSync(
      config,
      JSON.stringify({
        autoscale: {
          enabled: true,
          tickSeconds: TICK_S,
          pools: [
            {
              name: 'auto',
              properties: { OSFamily: 'linux' },
              // Debug: each worker logs every action it executes, which the test counts.
              provider: { type: 'process', executors: 1, drainTimeoutSeconds: 20, workerArgs: ['--log-level', 'debug'] },
              minWorkers: 1,
              maxWorkers: 4,
              scaleUpCooldownSeconds: UP_COOLDOWN_S,
              scaleDownCooldownSeconds: DOWN_COOLDOWN_S,
            },
          ],
        },
      }),
    );
    server = await startServerProcess(['--config', config, '--data-dir', dataDir, '--executors', '0']);
    client = new ReapiClient({ target: server.address });
    exec = new ExecClient(server.address);
  });
  after(async () => {
    client?.close();
    exec?.close();
    await server?.stop();
  });

  it('grows with a burst of 200 actions, executes each once, shrinks back to the minimum through drains, and leaves no worker behind', async () => {
    // Below the minimum at the first tick: one worker at once.
    await waitForStatus(server.url, (s) => s.workers.length === 1 && pool(s).starting === 0, 30_000);

    const jobs = [];
    for (let i = 0; i < 200; i++) {
      const nonce = randomUUID();
      const digest = await uploadAction(client, {
        argv: ['/bin/sh', '-c', `sleep 0.1$((${i} % 10)); echo ${nonce} > out.txt`],
        outputFiles: ['out.txt'],
      });
      jobs.push({ nonce, digest });
    }
    const burst = Date.now();
    const pending: Promise<Observed>[] = jobs.map((j) => exec.execute(j.digest));

    // The decision to grow: within one cooldown and one tick of the burst (the cooldown since the first worker has passed by now).
    const grown = await waitForStatus(server.url, (s) => pool(s).lastChangeDirection === 'up' && pool(s).desired === 4, 10_000);
    const decidedAfter = millis(pool(grown).lastChange) - burst;
    // A second of slack for timers on a loaded machine.
    assert.ok(decidedAfter <= (UP_COOLDOWN_S + TICK_S + 1) * 1000, `decided to grow ${decidedAfter} ms after the burst`);
    assert.match(pool(grown).lastChangeReason, /^up 1→4: utilization/);
    const full = await waitForStatus(server.url, (s) => s.workers.length === 4, 30_000);
    assert.deepEqual(full.workers.map((w) => w.name).sort(), ['auto-0', 'auto-1', 'auto-2', 'auto-3']);

    const results = await Promise.all(pending);
    assert.equal(new Set(results.map((r) => r.name)).size, 200, 'one operation per action');
    for (const [k, r] of results.entries()) {
      assert.equal(r.stages.filter((st) => st === ExecutionStage_Value.COMPLETED).length, 1, `action ${k} completed once`);
      assert.equal(r.response?.status?.code ?? Code.OK, Code.OK, r.response?.status?.message);
      const out = r.response!.result!.outputFiles.find((f) => f.path === 'out.txt')!;
      assert.equal((await client.read(fromWire(SHA256, out.digest))).toString(), `${jobs[k]!.nonce}\n`, `action ${k} has its own output`);
    }

    // Back to the minimum, each worker drained before it is stopped.
    const shrunk = await waitForStatus(server.url, (s) => s.workers.length === 1 && pool(s).workers === 1 && pool(s).draining === 0, 60_000);
    assert.equal(pool(shrunk).lastChangeDirection, 'down');
    assert.equal(shrunk.completed, 200, 'the scheduler recorded one result per action');
    assert.equal(shrunk.requeued, 0, 'no action was handed back or lost with a worker');
    assert.equal(shrunk.staleResults, 0);

    // Each worker logged every action it executed: across all of them, each operation exactly once.
    const dir = path.join(dataDir, 'autoscale', 'auto');
    const executed = new Map<string, string[]>();
    for (const file of readdirSync(dir).filter((f) => f.endsWith('.log'))) {
      for (const rec of records(readFileSync(path.join(dir, file), 'utf8').split('\n'))) {
        if (rec.msg === 'executing an action') executed.set(String(rec.op), [...(executed.get(String(rec.op)) ?? []), file]);
      }
    }
    for (const r of results) assert.equal(executed.get(r.name)?.length, 1, `${r.name} executed on ${executed.get(r.name)?.join(', ') ?? 'no worker'}`);
    assert.equal(executed.size, 200);
    const byWorker = new Set([...executed.values()].flat());
    assert.ok(byWorker.size >= 2, `the new workers took part: ${[...byWorker].join(', ')}`);

    const log = records(server.logs);
    const stopped = log.filter((r) => r.msg === 'worker process stopped');
    assert.equal(stopped.length, 3, 'three workers were stopped');
    for (const r of stopped) assert.equal(r.code, 0, `${r.worker} exited cleanly after draining`);
    assert.ok(!log.some((r) => r.msg === 'worker process did not exit after draining; killing it'));
    const drained = log.filter((r) => r.msg === 'worker is draining').map((r) => r.worker);
    assert.deepEqual(drained.sort(), stopped.map((r) => r.worker).sort(), 'each stopped worker was drained at the scheduler first');

    // What an operator sees.
    const s = await fetchStatus(server.url);
    assert.equal(pool(s).workers, 1);
    assert.equal(pool(s).desired, 1);
    assert.equal(pool(s).provider, 'process');

    // The last worker goes with the server.
    const pids = log.filter((r) => r.msg === 'started a worker process').map((r) => Number(r.pid));
    assert.equal(pids.length, 4);
    assert.equal(await server.stop(), 0);
    for (const pid of pids) assert.ok(!alive(pid), `worker process ${pid} is gone`);
  });
});

describe('autoscaling with the command provider', () => {
  let server: ServerProcess;
  let dir: string;
  let client: ReapiClient;
  let exec: ExecClient;
  // The scripts' workers are not this test's children: their pids are in the scripts' files.
  const pids = () =>
    readdirSync(dir)
      .filter((f) => f.endsWith('.pid'))
      .map((f) => ({ name: f.slice(0, -4), pid: Number(readFileSync(path.join(dir, f), 'utf8')) }));

  before(async () => {
    dir = tmpDir('repr-autoscale-cmd-');
    // Like a cloud CLI: starts machines it names itself and says nothing the provider could rely on.
    writeFileSync(
      path.join(dir, 'add.sh'),
      `#!/bin/sh
set -e
dir=$1 scheduler=$2 count=$3
[ -n "$scheduler" ] || { echo "no scheduler address yet" >&2; exit 1; }
for i in $(seq 1 "$count"); do
  name=cmd-$(od -An -N4 -tx1 /dev/urandom | tr -d ' \\n')
  "${process.execPath}" "${REPR_BIN}" worker --scheduler "$scheduler" --name "$name" --data-dir "$dir/$name" --executors 1 --log-format json </dev/null >"$dir/$name.log" 2>&1 &
  echo $! >"$dir/$name.pid"
  echo "started $name"
done
`,
    );
    // Stops workers by name, and waits for each to exit (a zombie counts as gone: reaping it is init's business).
    writeFileSync(
      path.join(dir, 'remove.sh'),
      `#!/bin/sh
set -e
dir=$1; shift
for name in "$@"; do
  pid=$(cat "$dir/$name.pid")
  kill -TERM "$pid"
  while kill -0 "$pid" 2>/dev/null && ! grep -q ') Z' "/proc/$pid/stat" 2>/dev/null; do sleep 0.1; done
  rm "$dir/$name.pid"
  echo "stopped $name"
done
`,
    );
    const config = path.join(dir, 'server.json');
    const dataDir = tmpDir('repr-autoscale-cmd-data-');
    // The scheduler's address is known only once it listens: the add command reads it from a file the test writes then.
    writeFileSync(
      config,
      JSON.stringify({
        autoscale: {
          enabled: true,
          tickSeconds: 0.5,
          pools: [
            {
              name: 'cmd',
              provider: {
                type: 'command',
                add: ['/bin/sh', '-c', `exec /bin/sh "$0" "$1" "$(cat "$1/scheduler" 2>/dev/null)" "$2"`, path.join(dir, 'add.sh'), dir, '{count}'],
                remove: ['/bin/sh', path.join(dir, 'remove.sh'), dir, '{names}'],
                timeoutSeconds: 60,
                executors: 1,
              },
              minWorkers: 1,
              maxWorkers: 2,
              scaleUpCooldownSeconds: 1,
              scaleDownCooldownSeconds: 3,
            },
          ],
        },
      }),
    );
    server = await startServerProcess(['--config', config, '--data-dir', dataDir, '--executors', '0', '--metrics-listen', '127.0.0.1:0']);
    writeFileSync(path.join(dir, 'scheduler'), server.url);
    client = new ReapiClient({ target: server.address });
    exec = new ExecClient(server.address);
  });
  after(async () => {
    client?.close();
    exec?.close();
    await server?.stop();
    for (const { pid } of dir ? pids() : []) if (alive(pid)) process.kill(pid, 'SIGKILL');
  });

  it('adds workers through the add command, counts them once they register, and removes a drained one by name through the remove command', async () => {
    // The first tick may come before the address file: that add fails, is logged, and is tried again.
    const one = await waitForStatus(server.url, (s) => s.workers.length === 1 && pool(s).starting === 0, 30_000);
    assert.match(one.workers[0]!.name, /^cmd-[0-9a-f]{8}$/);
    assert.equal(pool(one).provider, 'command');

    const digests = [];
    for (let i = 0; i < 30; i++) digests.push(await uploadAction(client, { argv: ['/bin/sh', '-c', `sleep 0.3; echo ${i}`] }));
    const pending = digests.map((d) => exec.execute(d));
    const two = await waitForStatus(server.url, (s) => s.workers.length === 2 && pool(s).starting === 0, 30_000);
    assert.equal(pool(two).desired, 2);
    const results = await Promise.all(pending);
    for (const r of results) assert.equal(r.response?.status?.code ?? Code.OK, Code.OK);

    const back = await waitForStatus(server.url, (s) => s.workers.length === 1 && pool(s).draining === 0, 30_000);
    assert.equal(back.completed, 30);
    assert.equal(back.requeued, 0);
    const log = records(server.logs);
    const removes = log.filter((r) => r.msg === 'autoscale command finished' && r.command === 'remove');
    assert.equal(removes.length, 1);
    const [gone] = (removes[0]!.argv as string[]).slice(-1);
    assert.match(String(removes[0]!.stdout), new RegExp(`stopped ${gone}`));
    assert.ok(!back.workers.some((w) => w.name === gone), 'the removed worker left the scheduler');
    assert.ok(!existsSync(path.join(dir, `${gone}.pid`)), 'and its process exited');
    const adds = log.filter((r) => r.msg === 'autoscale command finished' && r.command === 'add');
    assert.deepEqual(
      adds.map((r) => (r.argv as string[]).at(-1)),
      ['1', '1'],
      'one worker for the minimum, one more for the load: none asked for twice while starting',
    );

    const metrics = await scrapeMetrics(server);
    assert.equal(metricValue(metrics, 'repr_autoscale_workers{pool="cmd"}'), 1);
    assert.equal(metricValue(metrics, 'repr_autoscale_desired_workers{pool="cmd"}'), 1);
    assert.ok(metricValue(metrics, 'repr_autoscale_decisions_total{pool="cmd",direction="down"}') >= 1);
    assert.ok(metricValue(metrics, 'repr_autoscale_decisions_total{pool="cmd",direction="up"}') >= 2);
    assert.ok(metricValue(metrics, 'repr_autoscale_decisions_total{pool="cmd",direction="hold"}') > 0);
    assert.ok(Number.isFinite(metricValue(metrics, 'repr_autoscale_predicted_load{pool="cmd"}')));
  });
});
