import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Digest } from '../src/common/digest.js';
import { ReapiClient } from '../src/reapi/reapi-client.js';
import { spawnRepr } from '../support/spawn-server.js';
import { seedDiskStore, storedDigests } from '../support/seed-store.js';
import { median, processCpuMs, round } from './stats.js';
import type { Benchmark, Metric } from './types.js';

/**
 * A data directory whose CAS holds `count` blobs. Writing a million files
 * takes minutes, so it is made once and kept in the temp directory for later
 * runs; the marker is written last, so an interrupted seeding starts over.
 */
function fixture(count: number, log: (msg: string) => void): string {
  const dir = path.join(os.tmpdir(), `repr-bench-startup-${count}`);
  const marker = path.join(dir, 'seeded');
  if (existsSync(marker)) {
    log(`reusing ${count} blobs in ${dir}`);
    return dir;
  }
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  seedDiskStore(path.join(dir, 'cas'), count, log);
  writeFileSync(marker, `${count}\n`);
  return dir;
}

interface Start {
  listeningMs: number;
  /** CPU time the server had used when it listened: what it did, less what the machine's other load added. */
  listeningCpuMs: number;
  indexedMs: number;
  /** FindMissing of blobs on disk, sent as soon as the server listened. */
  probe?: { ms: number; missing: number; beforeIndexed: boolean };
}

/**
 * Spawns `repr server` on `dataDir` and times, from the spawn, its listening
 * line and its "CAS indexed" line. A server whose listening line does not say
 * `casIndexed: false` indexed before listening (earlier versions did), so both
 * times are the same.
 */
async function startOnce(dataDir: string, probe: Digest[]): Promise<Start> {
  const t0 = performance.now();
  let listeningMs = 0;
  let listeningCpuMs = 0;
  let indexedMs = 0;
  let probing: Promise<Start['probe']> | undefined;
  const server = await spawnRepr(
    ['server', '--listen', '127.0.0.1:0', '--data-dir', dataDir, '--cache-only'],
    (rec, child) => {
      if (rec.msg === 'repr server listening') {
        listeningMs = performance.now() - t0;
        listeningCpuMs = processCpuMs(child.pid!).self;
        if (rec.casIndexed !== false) {
          indexedMs = listeningMs;
          return true;
        }
        if (probe.length > 0) probing = findMissingNow(String(rec.address), probe, () => indexedMs === 0);
      }
      if (rec.msg === 'CAS indexed') {
        indexedMs = performance.now() - t0;
        return true;
      }
      return false;
    },
    900_000,
  );
  const probed = await probing;
  await server.stop();
  return { listeningMs, listeningCpuMs, indexedMs, ...(probed ? { probe: probed } : {}) };
}

async function findMissingNow(address: string, digests: Digest[], stillIndexing: () => boolean): Promise<Start['probe']> {
  const client = new ReapiClient({ target: address });
  try {
    const t = performance.now();
    const missing = await client.findMissing(digests);
    return { ms: performance.now() - t, missing: missing.length, beforeIndexed: stillIndexing() };
  } finally {
    client.close();
  }
}

/**
 * Time from spawning `repr server` until it listens, on a data directory
 * whose CAS holds 1,040,000 blobs and on an empty one (the baseline), and
 * until its CAS is indexed. Runs alternate between the two directories so
 * that a change in the machine's load hits both alike; the page cache is
 * warm after the first run, as on a server restarted in place.
 */
export const startup: Benchmark = {
  name: 'startup',
  description: 'start until listening and until the CAS is indexed, 1,040,000 blobs on disk vs. an empty data dir',
  async run(ctx) {
    const count = ctx.quick ? 5_000 : 1_040_000;
    const runs = ctx.quick ? 1 : 5;
    const full = fixture(count, ctx.log);
    const empty = mkdtempSync(path.join(os.tmpdir(), 'repr-bench-startup-empty-'));
    // From the last fan-out directory, the last one the index reaches.
    const probe = storedDigests(path.join(full, 'cas'), 'ff', 1000);
    try {
      const onEmpty: Start[] = [];
      const onFull: Start[] = [];
      for (let i = 0; i < runs; i++) {
        onEmpty.push(await startOnce(empty, []));
        const s = await startOnce(full, probe);
        if (s.probe && s.probe.missing > 0) throw new Error(`FindMissing during indexing reported ${s.probe.missing} of ${probe.length} blobs on disk missing`);
        onFull.push(s);
        ctx.log(
          `run ${i + 1}: empty ${onEmpty[i]!.listeningMs.toFixed(0)} ms; full listening ${s.listeningMs.toFixed(0)} ms, indexed ${s.indexedMs.toFixed(0)} ms`,
        );
      }
      const n = count.toLocaleString('en-US');
      const sec = (xs: number[]) => round(median(xs) / 1000, 2);
      const spread = (xs: number[]): [number, number] => [round(Math.min(...xs) / 1000, 2), round(Math.max(...xs) / 1000, 2)];
      const emptyListening = onEmpty.map((s) => s.listeningMs);
      const listening = onFull.map((s) => s.listeningMs);
      const indexed = onFull.map((s) => s.indexedMs);
      const metrics: Metric[] = [
        { name: 'start until listening, empty data dir', value: sec(emptyListening), unit: 's', spread: spread(emptyListening) },
        {
          name: `start until listening, ${n} blobs`,
          value: sec(listening),
          unit: 's',
          baseline: sec(emptyListening),
          spread: spread(listening),
          target: { text: '≤ 1 s', met: median(listening) <= 1000 },
        },
        {
          name: `server CPU until listening, ${n} blobs`,
          value: round(median(onFull.map((s) => s.listeningCpuMs)), 0),
          unit: 'ms',
          baseline: round(median(onEmpty.map((s) => s.listeningCpuMs)), 0),
        },
        { name: `start until CAS indexed, ${n} blobs`, value: sec(indexed), unit: 's', baseline: sec(emptyListening), spread: spread(indexed) },
      ];
      const probes = onFull.flatMap((s) => (s.probe?.beforeIndexed ? [s.probe.ms] : []));
      if (probes.length > 0) {
        metrics.push({ name: `FindMissing of ${probe.length} unindexed blobs, answered during indexing`, value: round(median(probes), 1), unit: 'ms' });
      }
      return metrics;
    } finally {
      rmSync(empty, { recursive: true, force: true });
    }
  },
};
