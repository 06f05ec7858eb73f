import { readdirSync, readFileSync } from 'node:fs';
import pg from 'pg';
import { ExecClient, type Observed, uploadAction } from '../src/client/execution-client.js';
import { type Digest, digestString } from '../src/common/digest.js';
import { startPostgres } from '../support/postgres.js';
import { type BenchServer, startBenchServer } from './server.js';
import { median, processCpuMs, quantile, round } from './stats.js';
import type { Benchmark, BenchContext, Metric } from './types.js';

/** One way of scheduling: its servers (each with its own CAS), one Execute client each, and the database it shares, if any. */
interface Setup {
  key: 'sqlite' | 'pg1' | 'pg2';
  label: string;
  servers: BenchServer[];
  execs: ExecClient[];
  database?: string;
}

interface Round {
  rate: number;
  /** Execute latency with every executor busy: mostly waiting in line. */
  p50: number;
  p95: number;
  /** Execute latency of a lone caller, executors idle: what scheduling adds to an action. */
  loneP50: number;
  /** Per action, ms of CPU: the servers' own, their sandboxes' (bwrap and the action, their children), the database's. */
  serverCpu: number;
  sandboxCpu: number;
  dbCpu: number;
  /** Per action: transactions the database committed, heartbeats included. */
  xacts: number;
}

/**
 * Dispatch throughput and Execute latency of one scheduler on SQLite against
 * one and two schedulers sharing a PostgreSQL database, all in one run with
 * the same four executors in total, rounds alternating so every setup sees
 * the same machine. Besides wall-clock figures, CPU per action (the servers'
 * and the database's, from /proc) and the database's committed transactions
 * per action, which a loaded machine moves far less; then one profiled pass
 * per PostgreSQL setup counts the statements an action costs.
 */
export const schedulers: Benchmark = {
  name: 'schedulers',
  description: '/bin/true actions through 1 scheduler on SQLite vs 1 and 2 schedulers sharing PostgreSQL (4 executors each setup), alternating rounds',
  async run(ctx) {
    const rounds = ctx.quick ? 1 : 5;
    const count = ctx.quick ? 6 : 200;
    const callers = ctx.quick ? 4 : 8;
    const profiled = ctx.quick ? 4 : 100;
    const lone = ctx.quick ? 3 : 30;
    // The durability SQLite's state has (WAL, synchronous=NORMAL): a commit is not waited on to reach the disk, a crash cannot corrupt.
    const db = await startPostgres({
      fsync: 'on',
      full_page_writes: 'on',
      synchronous_commit: 'off',
      shared_preload_libraries: 'pg_stat_statements',
    });
    const monitor = new pg.Client({ connectionString: db.url.replace(/\/repr$/, '/postgres') });
    const setups: Setup[] = [];
    try {
      await monitor.connect();
      await monitor.query('CREATE EXTENSION pg_stat_statements');
      // Counted only in the profiled pass, so the timed rounds do not pay for it.
      await setTracking(monitor, 'none');
      const postmaster = parentOf((await monitor.query('SELECT pg_backend_pid() AS pid')).rows[0].pid as number);
      const pg1 = db.createDatabase('bench_pg1');
      const pg2 = db.createDatabase('bench_pg2');
      setups.push(
        { key: 'sqlite', label: '1 scheduler, SQLite', servers: [], execs: [] },
        { key: 'pg1', label: '1 scheduler, PostgreSQL', servers: [], execs: [], database: 'bench_pg1' },
        { key: 'pg2', label: '2 schedulers, PostgreSQL', servers: [], execs: [], database: 'bench_pg2' },
      );
      await startServers([
        [setups[0]!, ['--executors', '4']],
        [setups[1]!, ['--executors', '4', '--state', pg1]],
        [setups[2]!, ['--executors', '2', '--state', pg2]],
        [setups[2]!, ['--executors', '2', '--state', pg2]],
      ]);
      // The first actions of a process pay for cold code and connections; a smoke run has no numbers to protect.
      if (!ctx.quick) for (const s of setups) await drive(s, await prepare(s, callers, 'warm-up'), callers);
      const results = new Map<Setup['key'], Round[]>(setups.map((s) => [s.key, []]));
      for (let r = 0; r < rounds; r++) {
        for (const s of rotate(setups, r)) {
          const actions = await prepare(s, count, `round ${r}`);
          const round = await measure(s, actions, callers, monitor, postmaster, await prepare(s, lone, `lone ${r}`));
          results.get(s.key)!.push(round);
          ctx.log(
            `round ${r + 1} ${s.label}: ${round.rate.toFixed(1)} actions/s, p50 ${round.p50.toFixed(1)} ms, p95 ${round.p95.toFixed(1)} ms, lone caller p50 ${round.loneP50.toFixed(1)} ms; per action ${round.serverCpu.toFixed(1)} ms server CPU, ${round.sandboxCpu.toFixed(1)} ms sandbox CPU, ${round.dbCpu.toFixed(1)} ms database CPU, ${round.xacts.toFixed(1)} transactions`,
          );
        }
      }
      const statements = new Map<Setup['key'], number>();
      for (const s of setups.filter((x) => x.database)) statements.set(s.key, await profile(s, await prepare(s, profiled, 'profile'), callers, monitor, ctx));
      return report(setups, results, statements);
    } finally {
      for (const s of setups) {
        for (const e of s.execs) e.close();
        for (const server of s.servers) await server.stop();
      }
      await monitor.end().catch(() => undefined);
      db.stop();
    }
  },
};

/** Starts every server at once (start-up is slow on a loaded machine); each joins its setup, so a failure still stops the others. */
async function startServers(plan: readonly [Setup, string[]][]): Promise<void> {
  const started = await Promise.allSettled(
    plan.map(async ([s, args]) => {
      const server = await startBenchServer(args);
      s.servers.push(server);
      s.execs.push(new ExecClient(server.server.address));
    }),
  );
  const failed = started.find((r) => r.status === 'rejected');
  if (failed) throw failed.reason;
}

/**
 * Distinct /bin/true actions, uploaded to every server of the setup: each
 * has its own CAS, and whichever scheduler claims an action executes it on
 * its own executors, reading the action's blobs from its own CAS.
 */
async function prepare(s: Setup, count: number, tag: string): Promise<Digest[]> {
  return Promise.all(
    Array.from({ length: count }, async (_, i) => {
      const spec = { argv: ['/bin/true'], salt: `${s.key} ${tag} ${i}` };
      const digests = await Promise.all(s.servers.map((x) => uploadAction(x.client, spec)));
      if (new Set(digests.map(digestString)).size !== 1) throw new Error(`the servers of "${s.label}" stored action ${i} under different digests`);
      return digests[0]!;
    }),
  );
}

/**
 * `callers` concurrent Execute calls until every action has completed. Each
 * caller keeps to one server, the callers split evenly among the setup's
 * servers; a lone caller alternates between them.
 */
async function drive(s: Setup, actions: readonly Digest[], callers: number): Promise<{ wallMs: number; latencies: number[] }> {
  let next = 0;
  const latencies: number[] = [];
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: callers }, async (_, k) => {
      for (let i = next++; i < actions.length; i = next++) {
        const exec = s.execs[(callers === 1 ? i : k) % s.execs.length]!;
        const t = performance.now();
        const done = await exec.execute(actions[i]!, { skipCacheLookup: true });
        latencies.push(performance.now() - t);
        expectSuccess(done, s.label);
      }
    }),
  );
  return { wallMs: performance.now() - t0, latencies };
}

/** A failing setup must not pass for a fast one. */
function expectSuccess(done: Observed, label: string): void {
  const status = done.response?.status;
  if (!done.response || (status?.code ?? 0) !== 0 || done.response.result?.exitCode !== 0)
    throw new Error(`${label}: ${done.name} did not succeed: ${status?.message || `exit code ${done.response?.result?.exitCode}`}`);
}

async function measure(
  s: Setup,
  actions: readonly Digest[],
  callers: number,
  monitor: pg.Client,
  postmaster: number,
  loneActions: readonly Digest[],
): Promise<Round> {
  await statsSettled();
  const cpu0 = serversCpu(s);
  const db0 = treeCpuMs(postmaster);
  const x0 = await committed(monitor, s.database);
  const { wallMs, latencies } = await drive(s, actions, callers);
  const cpu1 = serversCpu(s);
  const db1 = treeCpuMs(postmaster);
  await statsSettled();
  const x1 = await committed(monitor, s.database);
  const { latencies: loneLatencies } = await drive(s, loneActions, 1);
  const n = actions.length;
  return {
    rate: n / (wallMs / 1000),
    p50: quantile(latencies, 0.5),
    p95: quantile(latencies, 0.95),
    loneP50: quantile(loneLatencies, 0.5),
    serverCpu: (cpu1.self - cpu0.self) / n,
    sandboxCpu: (cpu1.children - cpu0.children) / n,
    dbCpu: (db1 - db0) / n,
    xacts: (x1 - x0) / n,
  };
}

/**
 * One untimed pass with pg_stat_statements counting: the statements (round
 * trips, BEGIN and COMMIT included) the setup's database ran per action, the
 * most frequent logged. Returns statements per action.
 */
async function profile(s: Setup, actions: readonly Digest[], callers: number, monitor: pg.Client, ctx: BenchContext): Promise<number> {
  await setTracking(monitor, 'top');
  await monitor.query('SELECT pg_stat_statements_reset()');
  await drive(s, actions, callers);
  await setTracking(monitor, 'none');
  const r = await monitor.query(
    `SELECT calls::int, query FROM pg_stat_statements JOIN pg_database d ON d.oid = dbid WHERE d.datname = $1 ORDER BY calls DESC`,
    [s.database],
  );
  const rows = r.rows as { calls: number; query: string }[];
  const total = rows.reduce((a, x) => a + x.calls, 0);
  ctx.log(`${s.label}: ${(total / actions.length).toFixed(2)} statements per action (heartbeats included), the most frequent:`);
  for (const x of rows.slice(0, 8)) ctx.log(`  ${(x.calls / actions.length).toFixed(2)}  ${x.query.replace(/\s+/g, ' ').slice(0, 110)}`);
  return total / actions.length;
}

async function setTracking(monitor: pg.Client, track: 'none' | 'top'): Promise<void> {
  await monitor.query(`ALTER SYSTEM SET pg_stat_statements.track = '${track}'`);
  await monitor.query('SELECT pg_reload_conf()');
  // Backends read the reloaded setting when they next take a command; give the signal time to arrive.
  await new Promise((r) => setTimeout(r, 200));
}

/** Transactions committed in the database, 0 without one. */
async function committed(monitor: pg.Client, database: string | undefined): Promise<number> {
  if (!database) return 0;
  const r = await monitor.query('SELECT xact_commit FROM pg_stat_database WHERE datname = $1', [database]);
  return Number(r.rows[0].xact_commit);
}

/** Backends flush their statistics at most once a second (PostgreSQL 15 and later), so counts are read after that. */
function statsSettled(): Promise<void> {
  return new Promise((r) => setTimeout(r, 1100));
}

function serversCpu(s: Setup): { self: number; children: number } {
  return s.servers
    .map((x) => processCpuMs(x.server.child.pid!))
    .reduce((a, x) => ({ self: a.self + x.self, children: a.children + x.children }), { self: 0, children: 0 });
}

function parentOf(pid: number): number {
  return Number(readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ')[1]);
}

/** CPU ms of a process tree one level deep: the process, its live children and the children it has reaped (PostgreSQL's postmaster and backends). */
function treeCpuMs(pid: number): number {
  const own = processCpuMs(pid);
  let live = 0;
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      if (parentOf(Number(entry)) === pid) live += processCpuMs(Number(entry)).self;
    } catch {
      /* exited while we looked */
    }
  }
  return own.self + own.children + live;
}

function rotate<T>(xs: readonly T[], by: number): T[] {
  return xs.map((_, i) => xs[(i + by) % xs.length]!);
}

function report(setups: readonly Setup[], results: Map<Setup['key'], Round[]>, statements: Map<Setup['key'], number>): Metric[] {
  const med = (key: Setup['key'], f: (r: Round) => number) => median(results.get(key)!.map(f));
  const spread = (key: Setup['key'], f: (r: Round) => number, digits: number): [number, number] => {
    const xs = results.get(key)!.map(f);
    return [round(Math.min(...xs), digits), round(Math.max(...xs), digits)];
  };
  const metrics: Metric[] = [];
  // Against SQLite's figure; the database's CPU against its own while idle (the PostgreSQL schedulers' heartbeats) in the SQLite rounds.
  const figures: { what: string; unit: string; digits: number; f: (r: Round) => number; baseline?: string; databaseOnly?: boolean }[] = [
    { what: 'throughput', unit: 'actions/s', digits: 1, f: (r) => r.rate, baseline: 'SQLite' },
    { what: 'Execute p50, executors busy', unit: 'ms', digits: 1, f: (r) => r.p50, baseline: 'SQLite' },
    { what: 'Execute p95, executors busy', unit: 'ms', digits: 1, f: (r) => r.p95, baseline: 'SQLite' },
    { what: 'Execute p50, lone caller', unit: 'ms', digits: 1, f: (r) => r.loneP50, baseline: 'SQLite' },
    { what: 'server CPU per action', unit: 'ms', digits: 1, f: (r) => r.serverCpu, baseline: 'SQLite' },
    { what: 'database CPU per action', unit: 'ms', digits: 2, f: (r) => r.dbCpu, baseline: 'idle during the SQLite rounds', databaseOnly: true },
    // What a machine that runs everything pays per action; SQLite's includes the idle database's share.
    { what: 'all CPU per action (servers, sandboxes, database)', unit: 'ms', digits: 1, f: (r) => r.serverCpu + r.sandboxCpu + r.dbCpu, baseline: 'SQLite' },
    { what: 'database transactions per action', unit: 'xacts', digits: 2, f: (r) => r.xacts, databaseOnly: true },
  ];
  for (const fig of figures) {
    for (const s of setups) {
      if (fig.databaseOnly && !s.database) continue;
      const compared = fig.baseline && s.key !== 'sqlite';
      metrics.push({
        name: `${s.label}: ${fig.what}${compared ? ` (baseline: ${fig.baseline})` : ''}`,
        value: round(med(s.key, fig.f), fig.digits),
        unit: fig.unit,
        ...(compared ? { baseline: round(med('sqlite', fig.f), fig.digits) } : {}),
        spread: spread(s.key, fig.f, fig.digits),
      });
    }
  }
  // The machine's load drifts between rounds; a ratio taken within each round drifts less than the ratio of the medians.
  for (const [what, f] of [
    ['throughput', (r: Round) => r.rate],
    ['Execute p50, lone caller', (r: Round) => r.loneP50],
  ] as const) {
    for (const s of setups.filter((x) => x.key !== 'sqlite')) {
      const ratios = results.get(s.key)!.map((r, i) => f(r) / f(results.get('sqlite')![i]!));
      metrics.push({
        name: `${s.label}: ${what}, ratio to SQLite in the same round (median of rounds)`,
        value: round(median(ratios), 2),
        unit: 'ratio',
        spread: [round(Math.min(...ratios), 2), round(Math.max(...ratios), 2)],
      });
    }
  }
  for (const s of setups)
    if (statements.has(s.key))
      metrics.push({ name: `${s.label}: statements per action (profiled pass)`, value: round(statements.get(s.key)!, 2), unit: 'statements' });
  return metrics;
}
