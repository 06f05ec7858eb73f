import { cpSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { BazelWorkspace, FIXTURE, hasBazel, processSummary } from '../support/bazel.js';
import { spawnServer, type ServerProcess } from '../support/spawn-server.js';
import { median, round } from './stats.js';
import type { Benchmark, Metric } from './types.js';

/**
 * A C++ workspace of `libs` cc_library targets and `bins` cc_binary targets
 * (each binary links a group of libraries, each library calls its
 * neighbour), with the offline stand-ins of the test workspace.
 */
function generateWorkspace(libs: number, bins: number): string {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'repr-bench-bazel-src-'));
  for (const f of ['WORKSPACE', '.bazelrc', 'third_party']) cpSync(path.join(FIXTURE, f), path.join(dir, f), { recursive: true });
  const group = Math.ceil(libs / bins);
  const build = ['load("@rules_cc//cc:defs.bzl", "cc_binary", "cc_library")', ''];
  mkdirSync(path.join(dir, 'cc'));
  for (let i = 0; i < libs; i++) {
    const dep = i % group === 0 ? undefined : i - 1;
    writeFileSync(path.join(dir, 'cc', `lib${i}.h`), `#pragma once\nint lib${i}(int x);\n`);
    writeFileSync(
      path.join(dir, 'cc', `lib${i}.cc`),
      `#include "cc/lib${i}.h"\n${dep !== undefined ? `#include "cc/lib${dep}.h"\n` : ''}#include <string>\n#include <vector>\n` +
        `int lib${i}(int x) {\n  std::vector<std::string> v;\n  for (int k = 0; k < x % 7 + ${i % 5}; ++k) v.push_back(std::to_string(k * ${i + 1}));\n` +
        `  int n = static_cast<int>(v.size());\n  return ${dep !== undefined ? `lib${dep}(x + n)` : 'n'};\n}\n`,
    );
    build.push(
      `cc_library(name = "lib${i}", srcs = ["lib${i}.cc"], hdrs = ["lib${i}.h"], linkstatic = True${dep !== undefined ? `, deps = [":lib${dep}"]` : ''})`,
    );
  }
  for (let b = 0; b < bins; b++) {
    const top = Math.min(libs - 1, (b + 1) * group - 1);
    writeFileSync(
      path.join(dir, 'cc', `bin${b}.cc`),
      `#include <cstdio>\n#include "cc/lib${top}.h"\nint main() { std::printf("%d\\n", lib${top}(${b})); return 0; }\n`,
    );
    build.push(`cc_binary(name = "bin${b}", srcs = ["bin${b}.cc"], deps = [":lib${top}"])`);
  }
  writeFileSync(path.join(dir, 'cc', 'BUILD'), `${build.join('\n')}\n`);
  return dir;
}

/** Wall-clock seconds of one Bazel command; checks it did what the phase expects. */
async function timed(ws: BazelWorkspace, args: string[], expect?: (kinds: Map<string, number>) => string | undefined): Promise<number> {
  const t = performance.now();
  const stderr = await ws.ok(args);
  const s = (performance.now() - t) / 1000;
  if (expect) {
    const why = expect(processSummary(stderr).kinds);
    if (why) throw new Error(`bazel ${args.join(' ')}: ${why}`);
  }
  return s;
}

const allHits = (k: Map<string, number>) =>
  (k.get('remote') ?? 0) + (k.get('linux-sandbox') ?? 0) + (k.get('processwrapper-sandbox') ?? 0) > 0 ? `not all cached: ${JSON.stringify([...k])}` : undefined;

/**
 * Bazel 4.2.3 building a generated C++ workspace (~200 targets): local, then
 * with --disk_cache (the baseline for a warm cache), --remote_cache cold and
 * warm, --remote_executor cold and warm. Warm = `bazel clean` then build,
 * repeated; median reported. Target: warm remote cache <= 1.3x the warm disk cache.
 */
export const bazel: Benchmark = {
  name: 'bazel',
  description: 'Bazel 4.2.3 on a generated C++ workspace: local, --disk_cache, --remote_cache and --remote_executor, cold and warm',
  async run(ctx) {
    if (!hasBazel()) throw new Error('bazel is not installed: apt-get install -y bazel-bootstrap (see README)');
    const libs = ctx.quick ? 6 : 190;
    const bins = ctx.quick ? 2 : 10;
    const reps = ctx.quick ? 1 : 3;
    const src = generateWorkspace(libs, bins);
    const ws = new BazelWorkspace(src);
    const dataDirs: string[] = [];
    const servers: ServerProcess[] = [];
    const server = async (args: string[]) => {
      const d = mkdtempSync(path.join(os.tmpdir(), 'repr-bench-bazel-data-'));
      dataDirs.push(d);
      const s = await spawnServer(['--data-dir', d, ...args]);
      servers.push(s);
      return s;
    };
    const build = ['build', '//cc:all', `--jobs=${ctx.quick ? 4 : 8}`];
    const warm = async (flags: string[]) => {
      const times: number[] = [];
      for (let i = 0; i < reps; i++) {
        await ws.ok(['clean']);
        times.push(await timed(ws, [...build, ...flags], allHits));
      }
      return times;
    };
    try {
      // Start the Bazel server and load the packages once, so no phase pays for it.
      await ws.ok(['build', '--nobuild', '//cc:all']);
      const local = await timed(ws, build);
      ctx.log(`local build ${local.toFixed(1)} s`);

      const diskCache = ['--disk_cache', mkdtempSync(path.join(os.tmpdir(), 'repr-bench-diskcache-'))];
      dataDirs.push(diskCache[1]!);
      await ws.ok(['clean']);
      const diskCold = await timed(ws, [...build, ...diskCache]);
      const diskWarm = await warm(diskCache);
      ctx.log(`disk cache cold ${diskCold.toFixed(1)} s, warm ${diskWarm.map((t) => t.toFixed(1)).join(' ')} s`);

      const cache = await server(['--cache-only']);
      const remoteCache = [`--remote_cache=${cache.url}`, '--remote_instance_name=bench'];
      await ws.ok(['clean']);
      const rcCold = await timed(ws, [...build, ...remoteCache]);
      const rcWarm = await warm(remoteCache);
      ctx.log(`remote cache cold ${rcCold.toFixed(1)} s, warm ${rcWarm.map((t) => t.toFixed(1)).join(' ')} s`);

      const exec = await server([]);
      const remoteExec = [
        `--remote_executor=${exec.url}`,
        '--remote_instance_name=bench',
        '--remote_default_exec_properties=OSFamily=linux',
        '--spawn_strategy=remote',
      ];
      await ws.ok(['clean']);
      const reCold = await timed(ws, [...build, ...remoteExec], (k) =>
        (k.get('linux-sandbox') ?? 0) + (k.get('processwrapper-sandbox') ?? 0) > 0 ? `ran locally: ${JSON.stringify([...k])}` : undefined,
      );
      const reWarm = await warm(remoteExec);
      ctx.log(`remote execution cold ${reCold.toFixed(1)} s, warm ${reWarm.map((t) => t.toFixed(1)).join(' ')} s`);

      const spread = (xs: number[]): [number, number] => [round(Math.min(...xs), 2), round(Math.max(...xs), 2)];
      const dw = median(diskWarm);
      const rw = median(rcWarm);
      const targets = `${libs + bins} targets`;
      const metrics: Metric[] = [
        { name: `local build, ${targets}`, value: round(local, 2), unit: 's' },
        { name: 'disk cache cold', value: round(diskCold, 2), unit: 's', baseline: round(local, 2) },
        { name: 'disk cache warm (baseline)', value: round(dw, 2), unit: 's', spread: spread(diskWarm) },
        { name: 'remote cache cold', value: round(rcCold, 2), unit: 's', baseline: round(local, 2) },
        {
          name: 'remote cache warm',
          value: round(rw, 2),
          unit: 's',
          baseline: round(dw, 2),
          spread: spread(rcWarm),
          target: { text: '<= 1.3x disk cache warm', met: rw <= 1.3 * dw },
        },
        { name: 'remote execution cold', value: round(reCold, 2), unit: 's', baseline: round(local, 2) },
        { name: 'remote execution warm', value: round(median(reWarm), 2), unit: 's', baseline: round(dw, 2), spread: spread(reWarm) },
      ];
      return metrics;
    } finally {
      await ws.shutdown();
      for (const s of servers) await s.stop();
      for (const d of [src, ...dataDirs]) rmSync(d, { recursive: true, force: true });
    }
  },
};
