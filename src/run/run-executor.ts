import { randomBytes } from 'node:crypto';
import { mkdir, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { type Digest, type DigestFunction, digestFunctionFromValue, makeDigest } from '../common/digest.js';
import { Code, codeOf, ReprError } from '../common/errors.js';
import { OutputChunk_Stream, type Node, type RunFinished, type RunRequest, type RunStats } from '../proto/repr/run/v1/run.js';
import type { Requirement } from '../scheduler/platform.js';
import { sandboxSettings } from '../scheduler/platform.js';
import type { BlobStore } from '../storage/blob-store.js';
import type { LocalExecutorOptions } from '../worker/local-executor.js';
import { uploadFile } from '../worker/outputs.js';
import { FuseMount } from './fuse-mount.js';
import { RunOverlay } from './overlay.js';
import { nodeFromWire, nodeToWire, pathNodesFromWire } from './nodes.js';
import { checkAbsolute, checkRoots, rootOf } from './paths.js';
import type { VChange, VNode, VPathNode } from './vfs.js';

/** What a run needs from its client, wherever the client is connected (here, or via the scheduler). */
export interface RunHost {
  /** Asks the client what `path` is (with its listing when `list`). */
  query(path: string, list: boolean): Promise<Node>;
  output(stream: OutputChunk_Stream, data: Buffer): void;
}

/** As for actions; workDir gets one directory per run (mountpoint, copy-up files), removed afterwards. */
export interface RunExecutorOptions extends LocalExecutorOptions {
  /**
   * Where the command's writes go: `overlay` (default: an overlayfs upper
   * layer on the worker's disk, falling back to FUSE where it cannot be
   * mounted) or `fuse` (copy-on-write inside the FUSE mount).
   */
  writes?: 'overlay' | 'fuse';
  /** The sandbox user, who must be able to write under the roots. */
  uid?: number;
  gid?: number;
}

const TOP_FILES = 10;

/** The platform properties of a run as scheduler requirements. */
export function runRequirements(req: RunRequest): Requirement[] {
  return req.platform.map((p) => ({ name: p.name, value: p.value }));
}

/**
 * Checks what can be checked before a run takes an executor; throws
 * INVALID_ARGUMENT. The scheduler checks before holding an executor, and the
 * executor again, as a worker trusts nothing it is sent.
 */
export function checkRunRequest(req: RunRequest): { roots: string[]; fn: DigestFunction; mappings: VPathNode[] } {
  if (!req.runId) throw new ReprError(Code.INVALID_ARGUMENT, 'run_id is empty');
  if (req.arguments.length === 0 || !req.arguments[0]) throw new ReprError(Code.INVALID_ARGUMENT, 'a run needs a command (arguments is empty)');
  const roots = checkRoots(req.roots);
  checkAbsolute(req.workingDirectory, 'working_directory');
  const fn = digestFunctionFromValue(req.digestFunction);
  for (const m of req.mappings) {
    checkAbsolute(m.path, 'mapping path');
    if (!rootOf(m.path, roots)) throw new ReprError(Code.INVALID_ARGUMENT, `mapping ${m.path} is outside every root`);
  }
  // Parsed here so that a bad mapping fails the request, not the mount.
  return { roots, fn, mappings: pathNodesFromWire(fn, req.mappings, 'mappings') };
}

/**
 * Carries out one `repr run` on this machine: mounts the client's roots
 * through FUSE (asking the client for what the mappings do not cover), runs
 * the command in the sandbox with its output streamed back, and stores what
 * the command changed in the CAS for the client to apply. The mount and the
 * scratch space are gone when it returns, whatever happened.
 */
export class RunExecutor {
  constructor(private readonly o: RunExecutorOptions) {}

  get id(): string {
    return this.o.id;
  }

  async run(req: RunRequest, host: RunHost, signal: AbortSignal): Promise<RunFinished> {
    const t0 = performance.now();
    let checked: ReturnType<typeof checkRunRequest>;
    try {
      checked = checkRunRequest(req);
    } catch (e) {
      // An answer, not an exception: a worker's scheduler waits for one.
      return this.failed(req, e, signal);
    }
    const { roots, fn, mappings } = checked;
    const cas = this.o.cas(req.instanceName);
    const dir = path.join(this.o.workDir, `run-${Date.now().toString(36)}-${randomBytes(4).toString('hex')}`);
    const mnt = path.join(dir, 'mnt');
    const scratch = path.join(dir, 'scratch');
    const fetched = path.join(dir, 'fetched');
    const stats: RunStats = { queries: 0, mappedHits: 0, bytesFetched: 0, blockedOnClientUs: 0, setupUs: 0, runUs: 0, top: [], bytesUploaded: 0 };
    const cost = new Map<string, { micros: number; bytes: number }>();
    const addCost = (p: string, micros: number, bytes: number) => {
      const c = cost.get(p) ?? { micros: 0, bytes: 0 };
      c.micros += micros;
      c.bytes += bytes;
      cost.set(p, c);
    };
    const fetches = new Map<string, Promise<string>>();
    const pathOfHash = new Map<string, string>();
    /** The mapped blobs being fetched in one batch before the command asks for them. */
    let prefetch: Promise<void> = Promise.resolve();
    const prefetching = new Set<string>();
    // One fetch per blob, shared by every open of it; a prefetched blob waits for its batch.
    const fetch = (hash: string, size: number): Promise<string> => {
      let p = fetches.get(hash);
      if (!p) {
        p = (async () => {
          const started = performance.now();
          const d = makeDigest(fn, hash, size);
          if (prefetching.has(hash)) await prefetch;
          let local = cas.localPath?.(d);
          if (!local) {
            await cas.localize?.([d]);
            local = cas.localPath?.(d);
            if (!local) {
              // A store with no files of its own (memory): keep a copy for the run.
              local = path.join(fetched, hash);
              await writeFile(local, await cas.get(d));
            }
            stats.bytesFetched += size;
            addCost(pathOfHash.get(hash) ?? hash, Math.round((performance.now() - started) * 1000), size);
          }
          return local;
        })();
        fetches.set(hash, p);
        p.catch(() => fetches.delete(hash));
      }
      return p;
    };

    let mount: FuseMount | undefined;
    let overlay: RunOverlay | undefined;
    try {
      await mkdir(mnt, { recursive: true });
      await mkdir(scratch, { recursive: true });
      await mkdir(fetched, { recursive: true });
      // Prefetch: the mapped files this worker lacks are fetched in one batch
      // (BatchReadBlobs calls, not one call per file) while the mount comes up
      // and the command starts.
      const missing: Digest[] = [];
      for (const m of mappings) {
        if (m.node.kind !== 'file' || m.node.hash === undefined) continue;
        pathOfHash.set(m.node.hash, m.path);
        const d = makeDigest(fn, m.node.hash, m.node.size ?? 0);
        if (d.sizeBytes > 0 && !prefetching.has(d.hash) && !cas.localPath?.(d)) {
          prefetching.add(d.hash);
          missing.push(d);
        }
      }
      if (missing.length > 0 && cas.localize) {
        const started = performance.now();
        prefetch = cas.localize(missing).then(
          () => {
            for (const d of missing) if (cas.localPath?.(d)) stats.bytesFetched += d.sizeBytes;
            this.o.log.debug({ blobs: missing.length, ms: Math.round(performance.now() - started) }, 'prefetched mapped inputs');
          },
          (e: unknown) => this.o.log.warn({ err: e }, 'prefetch of mapped inputs failed; they will be fetched when opened'),
        );
      }
      mount = await FuseMount.start({
        mountpoint: mnt,
        scratchDir: scratch,
        roots,
        mappings,
        uid: this.o.uid ?? 65534,
        gid: this.o.gid ?? 65534,
        log: this.o.log,
        query: async (p: string, list: boolean): Promise<VNode> => {
          if (signal.aborted) throw new ReprError(Code.CANCELLED, 'run cancelled');
          const started = performance.now();
          stats.queries++;
          const node = await host.query(p, list);
          const us = Math.round((performance.now() - started) * 1000);
          stats.blockedOnClientUs += us;
          addCost(p, us, 0);
          const v = nodeFromWire(fn, node, `answer for ${p}`);
          if (v.hash !== undefined) pathOfHash.set(v.hash, p);
          return v;
        },
        fetch,
      });
      overlay = await this.overlayOver(mnt, dir);
      const view = overlay?.merged ?? mnt;
      const timeoutMs = Math.min(this.o.maxTimeoutMs, req.timeoutMs > 0 ? req.timeoutMs : this.o.defaultTimeoutMs);
      const { limits, network } = sandboxSettings(runRequirements(req));
      const env: Record<string, string> = {};
      for (const v of req.environmentVariables) env[v.name] = v.value;
      env.PATH ??= '/usr/local/bin:/usr/bin:/bin';
      const started = performance.now();
      stats.setupUs = Math.round((started - t0) * 1000);
      const r = await this.o.sandbox.run(
        {
          argv: req.arguments,
          env,
          binds: roots.map((root) => ({ host: path.join(view, root), path: root })),
          workingDirectory: req.workingDirectory,
          onOutput: (s, chunk) => host.output(s === 'stdout' ? OutputChunk_Stream.STDOUT : OutputChunk_Stream.STDERR, chunk),
          timeoutMs,
          limits,
          network,
        },
        signal,
      );
      stats.runUs = Math.round((performance.now() - started) * 1000);
      const report = await mount.report();
      stats.mappedHits = report.mappedHits;
      stats.top = [...cost]
        .sort((a, b) => b[1].micros - a[1].micros)
        .slice(0, TOP_FILES)
        .map(([p, c]) => ({ path: p, micros: c.micros, bytes: c.bytes }));
      const base = { runId: req.runId, accessed: report.accessed, listed: report.listed, stats };
      if (signal.aborted) return { ...base, status: { code: Code.CANCELLED, message: 'run cancelled; nothing was written back', details: [] }, exitCode: r.exitCode, signal: r.signal ?? '', changes: [] };
      if (r.timedOut) {
        return { ...base, status: { code: Code.DEADLINE_EXCEEDED, message: `run timed out after ${timeoutMs} ms; its process tree was killed and nothing was written back`, details: [] }, exitCode: r.exitCode, signal: r.signal ?? '', changes: [] };
      }
      const changes = overlay ? await overlay.changes(roots, new Set(report.listed)) : await mount.changes();
      const wire = [];
      for (const c of changes) wire.push({ path: c.path, node: await this.store(cas, fn, c, stats) });
      return {
        ...base,
        status: r.oomKilled ? { code: Code.RESOURCE_EXHAUSTED, message: `the command exceeded its memory limit and was killed (exit code ${r.exitCode})`, details: [] } : undefined,
        exitCode: r.exitCode,
        signal: r.signal ?? '',
        changes: wire,
      };
    } catch (e) {
      return this.failed(req, e, signal, stats);
    } finally {
      // The overlay first: it holds the FUSE mount as its lower layer.
      await overlay?.unmount();
      await mount?.close().catch((e: unknown) => this.o.log.warn({ err: e, mnt }, 'could not unmount a run'));
      await rm(dir, { recursive: true, force: true }).catch((e: unknown) => this.o.log.warn({ err: e, dir }, 'could not remove a run directory'));
    }
  }

  /** A run that could not be carried out, with the error's code (INTERNAL for an unexpected one). */
  private failed(req: RunRequest, e: unknown, signal: AbortSignal, stats?: RunStats): RunFinished {
    const code = codeOf(e);
    if (code === Code.UNKNOWN || code === Code.OK) this.o.log.error({ err: e, run: req.runId }, 'run failed');
    return {
      runId: req.runId,
      status: { code: signal.aborted ? Code.CANCELLED : code === Code.OK || code === Code.UNKNOWN ? Code.INTERNAL : code, message: `${this.o.id}: ${(e as Error).message}`, details: [] },
      exitCode: -1,
      signal: '',
      changes: [],
      accessed: [],
      listed: [],
      stats,
    };
  }

  /**
   * The writable view of the run: an overlay whose upper layer takes the
   * command's writes at disk speed. Where overlayfs cannot be mounted (no
   * privileges, an old kernel) the FUSE mount itself takes the writes,
   * copy-on-write into its scratch directory: slower, same result.
   */
  private async overlayOver(mnt: string, dir: string): Promise<RunOverlay | undefined> {
    if (this.o.writes === 'fuse' || RunExecutor.noOverlay) return undefined;
    try {
      return await RunOverlay.mount(mnt, dir);
    } catch (e) {
      RunExecutor.noOverlay = true;
      this.o.log.warn({ err: e }, 'cannot mount overlayfs over the FUSE mount; runs write through FUSE instead (slower)');
      return undefined;
    }
  }

  /** Set after an overlay mount failed once, so that every run does not try again. */
  private static noOverlay = false;

  /** A change as the client gets it; new content goes to the CAS first. */
  private async store(cas: BlobStore, fn: DigestFunction, c: VChange, stats: RunStats): Promise<Node> {
    const v: VNode = { kind: c.kind };
    if (c.kind === 'file') {
      if (c.file) {
        const { digest, uploaded } = await uploadFile(cas, fn, c.file);
        stats.bytesUploaded += uploaded;
        v.hash = digest.hash;
        v.size = digest.sizeBytes;
      } else {
        v.hash = c.hash;
        v.size = c.size;
      }
      v.executable = c.executable ?? false;
    } else if (c.kind === 'symlink') {
      v.target = c.target;
    }
    return nodeToWire(v, fn);
  }
}
