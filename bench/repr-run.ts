import { spawn, spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { REPR_BIN } from '../support/spawn-server.js';
import { withServer } from './server.js';
import { median, round } from './stats.js';
import type { Benchmark, Metric } from './types.js';

/**
 * A C project in the shape of a small library: `files` sources, each
 * including a few of `headers` headers (which include each other), built by
 * a Makefile into one program.
 */
function makeProject(dir: string, files: number, headers: number): void {
  mkdirSync(path.join(dir, 'src'), { recursive: true });
  mkdirSync(path.join(dir, 'include', 'lib'), { recursive: true });
  for (let h = 0; h < headers; h++) {
    const deps = h > 0 ? `#include "lib/h${h - 1}.h"\n` : '';
    writeFileSync(
      path.join(dir, 'include', 'lib', `h${h}.h`),
      `#ifndef H${h}\n#define H${h}\n${deps}static inline int f${h}(int x) { return x * ${h + 1} + ${h}; }\n#endif\n`,
    );
  }
  for (let f = 0; f < files; f++) {
    const inc = [0, 1, 2].map((k) => `#include "lib/h${(f * 7 + k * 5) % headers}.h"`).join('\n');
    writeFileSync(
      path.join(dir, 'src', `m${f}.c`),
      `#include <stdio.h>\n#include <string.h>\n${inc}\nint g${f}(int x) { return f${(f * 7) % headers}(x) + (int)strlen("m${f}"); }\n`,
    );
  }
  const decls = Array.from({ length: files }, (_, f) => `int g${f}(int);`).join(' ');
  const calls = Array.from({ length: files }, (_, f) => `g${f}(1)`).join(' + ');
  writeFileSync(path.join(dir, 'src', 'main.c'), `#include <stdio.h>\n${decls}\nint main(void) { printf("%d\\n", ${calls}); return 0; }\n`);
  writeFileSync(
    path.join(dir, 'Makefile'),
    [
      'CFLAGS = -O1 -Iinclude',
      'SRCS = $(wildcard src/*.c)',
      'OBJS = $(patsubst src/%.c,build/%.o,$(SRCS))',
      'build/app: $(OBJS)',
      '\t$(CC) -o $@ $(OBJS)',
      'build/%.o: src/%.c | build',
      '\t$(CC) $(CFLAGS) -c $< -o $@',
      'build:',
      '\tmkdir -p build',
      '',
    ].join('\n'),
  );
}

/** One `repr run` of `argv` in `cwd`, its stats written to `statsFile`; rejects with its stderr if it fails. */
export function reprRun(cwd: string, server: string, records: string, statsFile: string, argv: string[]): Promise<number> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [REPR_BIN, 'run', '--server', server, '--stats-json', statsFile, '--', ...argv], {
      cwd,
      env: { ...process.env, REPR_RUN_RECORDS: records },
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let err = '';
    child.stderr.on('data', (c: Buffer) => (err += c.toString()));
    child.on('error', reject);
    child.on('exit', (code) => (code === 0 ? resolve(code) : reject(new Error(`repr run exited ${code}: ${err}`))));
  });
}

interface RunSample {
  ms: number;
  queries: number;
  mappedHits: number;
  setupMs: number;
  blockedMs: number;
}

/**
 * The cost of `repr run` against running the same build locally: `make -j2`
 * of a generated C project, locally (baseline), as a first run (a new
 * server, nothing recorded: every header is found by asking the client,
 * every file uploaded), and as a second run in the unchanged tree (the
 * record of the first sends every path as a mapping: no questions).
 * Each repetition starts from a clean build directory.
 */
export const reprRunBench: Benchmark = {
  name: 'repr-run',
  description: 'make -j2 of a generated C project: locally vs `repr run` first run (on demand) and second run (mapped)',
  async run(ctx) {
    const files = ctx.quick ? 4 : 40;
    const headers = ctx.quick ? 6 : 60;
    const reps = ctx.quick ? 1 : 5;
    const base = mkdtempSync(path.join(os.tmpdir(), 'repr-bench-run-'));
    try {
      const proj = path.join(base, 'proj');
      makeProject(proj, files, headers);
      const clean = () => rmSync(path.join(proj, 'build'), { recursive: true, force: true });
      const localMs: number[] = [];
      for (let i = 0; i < reps; i++) {
        clean();
        const t = performance.now();
        const r = spawnSync('make', ['-j2'], { cwd: proj, stdio: 'ignore' });
        localMs.push(performance.now() - t);
        if (r.status !== 0) throw new Error('local make failed');
      }
      const statsFile = path.join(base, 'stats.json');
      const sample = async (server: string, records: string): Promise<RunSample> => {
        clean();
        const t = performance.now();
        await reprRun(proj, server, records, statsFile, ['make', '-j2']);
        const ms = performance.now() - t;
        const s = (
          JSON.parse(readFileSync(statsFile, 'utf8')) as {
            runs: { stats: { queries: number; mappedHits: number; setupUs: number; blockedOnClientUs: number } }[];
          }
        ).runs[0]!.stats;
        return { ms, queries: s.queries, mappedHits: s.mappedHits, setupMs: s.setupUs / 1000, blockedMs: s.blockedOnClientUs / 1000 };
      };
      const first: RunSample[] = [];
      const second: RunSample[] = [];
      for (let i = 0; i < reps; i++) {
        // A new server per repetition: its CAS and the worker cache start empty, as on a first run.
        await withServer(
          async ({ server }) => {
            const records = path.join(base, `records-${i}`);
            first.push(await sample(server.url, records));
            second.push(await sample(server.url, records));
          },
          ['--executors', '2'],
        );
        ctx.log(
          `rep ${i + 1}: local ${round(localMs[i]!)} ms, first ${round(first[i]!.ms)} ms (${first[i]!.queries} queries), second ${round(second[i]!.ms)} ms (${second[i]!.queries} queries)`,
        );
      }
      const local = median(localMs);
      const m = (xs: RunSample[], k: keyof RunSample) => round(median(xs.map((x) => x[k])));
      const spread = (xs: number[]): [number, number] => [round(Math.min(...xs)), round(Math.max(...xs))];
      const metrics: Metric[] = [
        { name: 'local make -j2', value: round(local), unit: 'ms', spread: spread(localMs) },
        { name: 'repr run first (on demand)', value: m(first, 'ms'), unit: 'ms', baseline: round(local), spread: spread(first.map((x) => x.ms)) },
        { name: 'repr run second (mapped)', value: m(second, 'ms'), unit: 'ms', baseline: round(local), spread: spread(second.map((x) => x.ms)) },
        { name: 'first run: on-demand queries', value: m(first, 'queries'), unit: 'queries' },
        { name: 'first run: blocked on client', value: m(first, 'blockedMs'), unit: 'ms' },
        {
          name: 'second run: on-demand queries',
          value: m(second, 'queries'),
          unit: 'queries',
          target: { text: '= 0', met: second.every((x) => x.queries === 0) },
        },
        { name: 'second run: lookups served by mappings', value: m(second, 'mappedHits'), unit: 'lookups' },
        { name: 'setup (mount + sandbox start), second run', value: m(second, 'setupMs'), unit: 'ms' },
      ];
      return metrics;
    } finally {
      rmSync(base, { recursive: true, force: true });
    }
  },
};
