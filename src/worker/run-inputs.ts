import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { type Digest, type DigestFunction, makeDigest } from '../common/digest.js';
import { Code, ReprError } from '../common/errors.js';
import type { Logger } from '../common/logger.js';
import type { RunHost } from '../executor/run-host.js';
import type { RunStats } from '../proto/repr/run/v1/run.js';
import type { BlobStore } from '../storage/blob-store.js';
import { nodeFromWire } from '../vfs/nodes.js';
import type { VNode, VPathNode } from '../vfs/vfs.js';
import type { RunDeadline } from './run-deadline.js';

/**
 * Paths and listing entries one run may learn from its client. The mount
 * keeps every one in memory; real builds stay far below this.
 */
const MAX_ANSWERED_NODES = 4_000_000;

export interface RunInputsOptions {
  cas: BlobStore;
  fn: DigestFunction;
  host: RunHost;
  deadline: RunDeadline;
  mappings: readonly VPathNode[];
  /** Where blobs of a CAS with no files of its own are copied for the run. */
  fetchedDir: string;
  log: Logger;
  /** Counted into as the run goes. */
  stats: RunStats;
}

/**
 * What a run's mount learns from outside: the client's answers about paths,
 * and the blobs of the files the command opens, each fetched once into this
 * worker's CAS (mapped ones in one batch up front). Every wait ends at the
 * run's deadline. Keeps what each path cost, for the run's stats.
 */
export class RunInputs {
  private readonly fetches = new Map<string, Promise<string>>();
  private readonly pathOfHash = new Map<string, string>();
  /** The mapped blobs being fetched in one batch before the command asks for them. */
  private readonly prefetching = new Set<string>();
  private prefetched: Promise<void> = Promise.resolve();
  private readonly cost = new Map<string, { micros: number; bytes: number }>();
  private answeredNodes: number;

  constructor(private readonly o: RunInputsOptions) {
    this.answeredNodes = o.mappings.length;
  }

  /**
   * Starts fetching the mapped files this worker lacks, in one batch
   * (BatchReadBlobs calls, not one call per file), while the mount comes up
   * and the command starts. A failure only costs speed: they are fetched
   * when opened instead.
   */
  prefetch(): void {
    const { cas, fn, log, stats } = this.o;
    const missing: Digest[] = [];
    for (const m of this.o.mappings) {
      if (m.node.kind !== 'file' || m.node.hash === undefined) continue;
      this.pathOfHash.set(m.node.hash, m.path);
      const d = makeDigest(fn, m.node.hash, m.node.size ?? 0);
      if (d.sizeBytes > 0 && !this.prefetching.has(d.hash) && !cas.localPath?.(d)) {
        this.prefetching.add(d.hash);
        missing.push(d);
      }
    }
    if (missing.length === 0 || !cas.localize) return;
    const started = performance.now();
    this.prefetched = cas.localize(missing).then(
      () => {
        for (const d of missing) if (cas.localPath?.(d)) stats.bytesFetched += d.sizeBytes;
        log.debug({ blobs: missing.length, ms: Math.round(performance.now() - started) }, 'prefetched mapped inputs');
      },
      (e: unknown) => log.warn({ err: e }, 'prefetch of mapped inputs failed; they will be fetched when opened'),
    );
  }

  /** A local file holding the blob; one fetch per blob, shared by every open of it. */
  readonly fetch = (hash: string, size: number): Promise<string> => {
    let p = this.fetches.get(hash);
    if (!p) {
      p = this.fetchOnce(hash, size);
      this.fetches.set(hash, p);
      p.catch(() => this.fetches.delete(hash));
    }
    return this.o.deadline.until(p);
  };

  /** The client's answer for `p`, held to the run's bounds. */
  readonly query = async (p: string, list: boolean): Promise<VNode> => {
    const { deadline, stats } = this.o;
    deadline.throwIfOver();
    const started = performance.now();
    stats.queries++;
    const node = await deadline.until(this.o.host.query(p, list));
    const us = Math.round((performance.now() - started) * 1000);
    stats.blockedOnClientUs += us;
    this.addCost(p, us, 0);
    this.answeredNodes += 1 + (node.entries?.length ?? 0);
    if (this.answeredNodes > MAX_ANSWERED_NODES)
      throw new ReprError(Code.RESOURCE_EXHAUSTED, `the client described more than ${MAX_ANSWERED_NODES} paths in one run`);
    const v = nodeFromWire(this.o.fn, node, `answer for ${p}`);
    if (v.hash !== undefined) this.pathOfHash.set(v.hash, p);
    return v;
  };

  /** The `n` paths that cost the run the most time. */
  costliest(n: number): RunStats['top'] {
    return [...this.cost]
      .sort((a, b) => b[1].micros - a[1].micros)
      .slice(0, n)
      .map(([p, c]) => ({ path: p, micros: c.micros, bytes: c.bytes }));
  }

  private async fetchOnce(hash: string, size: number): Promise<string> {
    const { cas, fn, stats } = this.o;
    const started = performance.now();
    const d = makeDigest(fn, hash, size);
    // A blob of the prefetch batch waits for it rather than being fetched twice.
    if (this.prefetching.has(hash)) await this.prefetched;
    let local = cas.localPath?.(d);
    if (local) return local;
    await cas.localize?.([d]);
    local = cas.localPath?.(d);
    if (!local) {
      // A store with no files of its own (memory): keep a copy for the run.
      local = path.join(this.o.fetchedDir, hash);
      await writeFile(local, await cas.get(d));
    }
    stats.bytesFetched += size;
    this.addCost(this.pathOfHash.get(hash) ?? hash, Math.round((performance.now() - started) * 1000), size);
    return local;
  }

  private addCost(p: string, micros: number, bytes: number): void {
    const c = this.cost.get(p) ?? { micros: 0, bytes: 0 };
    c.micros += micros;
    c.bytes += bytes;
    this.cost.set(p, c);
  }
}
