import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { withServer } from './server.js';
import { reprRun } from './repr-run.js';
import { median, round } from './stats.js';
import type { Benchmark, Metric } from './types.js';

/** `files` small files in directories of 100, written an hour ago (older than the racy margin), as a checkout is. */
function makeTree(root: string, files: number): void {
  const written: string[] = [];
  for (let i = 0; i < files; i++) {
    const dir = path.join(root, 'data', `d${Math.floor(i / 100)}`);
    if (i % 100 === 0) mkdirSync(dir, { recursive: true });
    const file = path.join(dir, `f${i}.txt`);
    // 0.1 to 6 KiB: the spread of a C project's sources and headers.
    writeFileSync(file, `file ${i}\n`.repeat(10 + ((i * 37) % 600)));
    written.push(file);
  }
  const ns = BigInt(Date.now() - 3600_000) * 1_000_000n + 123_456_789n;
  for (let i = 0; i < written.length; i += 500) {
    const r = spawnSync('touch', ['-m', '-d', `@${ns / 1_000_000_000n}.${ns % 1_000_000_000n}`, ...written.slice(i, i + 500)]);
    if (r.status !== 0) throw new Error('touch failed');
  }
}

interface Sample {
  wallMs: number;
  mappingMs: number;
  hashed: number;
  queries: number;
  blockedMs: number;
}

async function timedRun(cwd: string, server: string, records: string, statsFile: string, cmd: string): Promise<Sample> {
  const t = performance.now();
  await reprRun(cwd, server, records, statsFile, ['/bin/sh', '-c', cmd]);
  const wallMs = performance.now() - t;
  const s = JSON.parse(readFileSync(statsFile, 'utf8')) as {
    client: { hashed: number };
    runs: { mappingMs: number; stats: { queries: number; blockedOnClientUs: number } }[];
  };
  const r = s.runs[0]!;
  return { wallMs, mappingMs: r.mappingMs, hashed: s.client.hashed, queries: r.stats.queries, blockedMs: r.stats.blockedOnClientUs / 1000 };
}

/**
 * What `repr run` reads and asks of the client when the tree is new to it:
 * - a fresh copy (`cp -a`, new inodes and ctimes) of a 2,000-file tree
 *   already run once, at the same path (its record found: the mappings are
 *   re-stated, and re-hashed if the cache does not know the copy) and
 *   elsewhere (no record: a first run, files asked for on demand);
 * - a first run (new server, no record) reading 1,000 small files: the
 *   questions it asks and the time the command is blocked on the client.
 */
export const runHash: Benchmark = {
  name: 'run-hash',
  description: '`repr run` on a fresh cp -a copy of a 2,000-file tree (re-hashing), and a first run reading 1,000 small files (questions)',
  async run(ctx) {
    const reps = ctx.quick ? 1 : 5;
    const copyFiles = ctx.quick ? 50 : 2000;
    const firstFiles = ctx.quick ? 50 : 1000;
    const base = mkdtempSync(path.join(os.tmpdir(), 'repr-bench-hash-'));
    const cmd = 'cat data/*/* > /dev/null';
    try {
      const pristine = path.join(base, 'pristine', 'proj');
      makeTree(pristine, copyFiles);
      const records = path.join(base, 'records');
      const statsFile = path.join(base, 'stats.json');
      const samePath: Sample[] = [];
      const elsewhere: Sample[] = [];
      await withServer(
        async ({ server }) => {
          const proj = path.join(base, 'proj');
          const copy = (to: string) => {
            rmSync(to, { recursive: true, force: true });
            if (spawnSync('cp', ['-a', pristine, to]).status !== 0) throw new Error('cp -a failed');
          };
          copy(proj);
          // Records the tree (and puts it in the CAS): what a fresh copy is compared with.
          await timedRun(proj, server.url, records, statsFile, cmd);
          for (let i = 0; i < reps; i++) {
            copy(proj);
            samePath.push(await timedRun(proj, server.url, records, statsFile, cmd));
            const other = path.join(base, `copy-${i}`);
            copy(other);
            elsewhere.push(await timedRun(other, server.url, records, statsFile, cmd));
            ctx.log(
              `rep ${i + 1}: same path: mappings ${round(samePath[i]!.mappingMs)} ms, ${samePath[i]!.hashed} hashed; elsewhere: ${round(elsewhere[i]!.wallMs)} ms, ${elsewhere[i]!.hashed} hashed, ${elsewhere[i]!.queries} questions`,
            );
          }
        },
        ['--executors', '2'],
      );

      const first: Sample[] = [];
      const small = path.join(base, 'small', 'proj');
      makeTree(small, firstFiles);
      for (let i = 0; i < reps; i++) {
        // A new server and no record: nothing known, as on a first run.
        await withServer(
          async ({ server }) => first.push(await timedRun(small, server.url, path.join(base, `first-records-${i}`), statsFile, cmd)),
          ['--executors', '2'],
        );
        ctx.log(`first run ${i + 1}: ${round(first[i]!.wallMs)} ms, ${first[i]!.queries} questions, blocked on client ${round(first[i]!.blockedMs)} ms`);
      }

      const m = (xs: Sample[], k: keyof Sample) => round(median(xs.map((x) => x[k])));
      const spread = (xs: Sample[], k: keyof Sample): [number, number] => [round(Math.min(...xs.map((x) => x[k]))), round(Math.max(...xs.map((x) => x[k])))];
      const metrics: Metric[] = [
        {
          name: `fresh copy, same path: mappings (stat + hash) of ${copyFiles} files`,
          value: m(samePath, 'mappingMs'),
          unit: 'ms',
          spread: spread(samePath, 'mappingMs'),
        },
        {
          name: 'fresh copy, same path: files hashed',
          value: m(samePath, 'hashed'),
          unit: 'files',
          target: { text: '= 0', met: samePath.every((x) => x.hashed === 0) },
        },
        { name: 'fresh copy, same path: wall', value: m(samePath, 'wallMs'), unit: 'ms', spread: spread(samePath, 'wallMs') },
        { name: 'fresh copy elsewhere: wall', value: m(elsewhere, 'wallMs'), unit: 'ms', spread: spread(elsewhere, 'wallMs') },
        {
          name: 'fresh copy elsewhere: files hashed',
          value: m(elsewhere, 'hashed'),
          unit: 'files',
          target: { text: '= 0', met: elsewhere.every((x) => x.hashed === 0) },
        },
        { name: 'fresh copy elsewhere: questions', value: m(elsewhere, 'queries'), unit: 'queries' },
        { name: `first run over ${firstFiles} small files: wall`, value: m(first, 'wallMs'), unit: 'ms', spread: spread(first, 'wallMs') },
        { name: 'first run: questions', value: m(first, 'queries'), unit: 'queries', spread: spread(first, 'queries') },
        { name: 'first run: blocked on client', value: m(first, 'blockedMs'), unit: 'ms', spread: spread(first, 'blockedMs') },
      ];
      return metrics;
    } finally {
      rmSync(base, { recursive: true, force: true });
    }
  },
};
