import { randomBytes } from 'node:crypto';
import { lstat, mkdir, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { type Digest, type DigestFunction, makeDigest } from '../common/digest.js';
import { Code, codeOf, ReprError, toStatus } from '../common/errors.js';
import { OutputChunk_Stream, type Node, type RunFinished, type RunRequest, type RunStats } from '../proto/repr/run/v1/run.js';
import type { Requirement } from '../executor/platform.js';
import { sandboxSettings } from '../executor/platform.js';
import type { BlobStore } from '../storage/blob-store.js';
import type { LocalExecutorOptions } from './local-executor.js';
import { uploadFile } from './outputs.js';
import { FuseMount, mountsUnder } from '../vfs/fuse-mount.js';
import { RunOverlay } from '../vfs/overlay.js';
import { nodeFromWire, nodeToWire } from '../vfs/nodes.js';
import type { VChange, VNode } from '../vfs/vfs.js';
import { checkRunRequest } from '../executor/run-request.js';
import { RunHost, runRequirements } from '../executor/run-host.js';



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
/**
 * Past its deadline a run's questions fail at once, which frees a command
 * blocked in the mount on one. If it is still running this much later,
 * something else holds it (a hung helper, a blocked fetch): the FUSE
 * connection itself is then aborted.
 */
const FORCE_AFTER_MS = 2000;
/**
 * Paths and listing entries one run may learn from its client. The mount
 * keeps every one in memory; real builds stay far below this.
 */
const MAX_ANSWERED_NODES = 4_000_000;


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

    // The timeout bounds the whole time this run holds the executor, not only
    // the command's: a command blocked in the mount on a question the client
    // never answers cannot be killed (it sleeps uninterruptibly in the kernel
    // until FUSE answers), so every wait on the client or the CAS ends at the
    // deadline too, and past it the mount is torn down.
    const timeoutMs = Math.min(this.o.maxTimeoutMs, req.timeoutMs > 0 ? req.timeoutMs : this.o.defaultTimeoutMs);
    const stop = new AbortController();
    let timedOut = false;
    let mount: FuseMount | undefined;
    let overlay: RunOverlay | undefined;
    const onCancel = () => stop.abort(new ReprError(Code.CANCELLED, 'run cancelled'));
    if (signal.aborted) onCancel();
    else signal.addEventListener('abort', onCancel, { once: true });
    let forceTimer: NodeJS.Timeout | undefined;
    const deadlineTimer = setTimeout(() => {
      timedOut = true;
      stop.abort(new ReprError(Code.DEADLINE_EXCEEDED, `run timed out after ${timeoutMs} ms`));
      forceTimer = setTimeout(() => {
        this.o.log.warn({ run: req.runId, mnt }, 'run still busy past its deadline; aborting its FUSE connection');
        void overlay?.unmount();
        void mount?.abort();
      }, FORCE_AFTER_MS);
    }, timeoutMs);
    const timedOutResult = (base: Pick<RunFinished, 'accessed' | 'listed' | 'stats'>, exitCode = -1, sig = ''): RunFinished => ({
      runId: req.runId,
      ...base,
      status: { code: Code.DEADLINE_EXCEEDED, message: `run timed out after ${timeoutMs} ms; its process tree was killed and nothing was written back`, details: [] },
      exitCode,
      signal: sig,
      changes: [],
    });

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
      return untilStopped(p, stop.signal);
    };
    let answeredNodes = mappings.length;

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
          if (stop.signal.aborted) throw stop.signal.reason;
          const started = performance.now();
          stats.queries++;
          const node = await untilStopped(host.query(p, list), stop.signal);
          const us = Math.round((performance.now() - started) * 1000);
          stats.blockedOnClientUs += us;
          addCost(p, us, 0);
          answeredNodes += 1 + (node.entries?.length ?? 0);
          if (answeredNodes > MAX_ANSWERED_NODES) throw new ReprError(Code.RESOURCE_EXHAUSTED, `the client described more than ${MAX_ANSWERED_NODES} paths in one run`);
          const v = nodeFromWire(fn, node, `answer for ${p}`);
          if (v.hash !== undefined) pathOfHash.set(v.hash, p);
          return v;
        },
        fetch,
      });
      overlay = await this.overlayOver(mnt, dir);
      const view = overlay?.merged ?? mnt;
      // bwrap resolves these as root on the worker: a root the client calls a
      // symlink would be followed to the worker's own files.
      for (const root of roots) {
        const st = await untilStopped(lstat(path.join(view, root)), stop.signal).catch((e: unknown) => {
          if (stop.signal.aborted) throw e;
          return undefined;
        });
        if (!st?.isDirectory()) throw new ReprError(Code.FAILED_PRECONDITION, `root ${root} is not a directory on the client`);
      }
      const { limits, network } = sandboxSettings(runRequirements(req));
      const env: Record<string, string> = {};
      for (const v of req.environmentVariables) env[v.name] = v.value;
      env.PATH ??= '/usr/local/bin:/usr/bin:/bin';
      if (stop.signal.aborted) throw stop.signal.reason;
      const started = performance.now();
      stats.setupUs = Math.round((started - t0) * 1000);
      const r = await this.o.sandbox.run(
        {
          argv: req.arguments,
          env,
          binds: roots.map((root) => ({ host: path.join(view, root), path: root })),
          // The command's writes land in the overlay's upper layer, owned by
          // the sandbox user, where the write caps can count them. FUSE
          // copy-on-write stores them as root in the helper's scratch space:
          // not counted (a known gap of that fallback mode).
          writableDirs: overlay ? [overlay.upper] : [],
          workingDirectory: req.workingDirectory,
          onOutput: (s, chunk) => host.output(s === 'stdout' ? OutputChunk_Stream.STDOUT : OutputChunk_Stream.STDERR, chunk),
          // The sandbox keeps its own timer as well, in case the deadline's is late.
          timeoutMs: Math.max(1, timeoutMs - (started - t0)),
          limits,
          network,
        },
        stop.signal,
      );
      stats.runUs = Math.round((performance.now() - started) * 1000);
      const report = await mount.report().catch(() => ({ accessed: [], listed: [], mappedHits: 0, queries: 0 }));
      stats.mappedHits = report.mappedHits;
      stats.top = [...cost]
        .sort((a, b) => b[1].micros - a[1].micros)
        .slice(0, TOP_FILES)
        .map(([p, c]) => ({ path: p, micros: c.micros, bytes: c.bytes }));
      const base = { runId: req.runId, accessed: report.accessed, listed: report.listed, stats };
      if (signal.aborted) return { ...base, status: { code: Code.CANCELLED, message: 'run cancelled; nothing was written back', details: [] }, exitCode: r.exitCode, signal: r.signal ?? '', changes: [] };
      if (r.timedOut || timedOut) return timedOutResult(base, r.exitCode, r.signal ?? '');
      if (r.limitExceeded) return { ...base, status: { code: Code.RESOURCE_EXHAUSTED, message: `${r.limitExceeded.message}; nothing was written back`, details: [] }, exitCode: r.exitCode, signal: r.signal ?? '', changes: [] };
      const changes = overlay ? await overlay.changes(roots, new Set(report.listed)) : await mount.changes();
      const wire = [];
      for (const c of changes) wire.push({ path: c.path, node: await this.store(cas, fn, c, stats) });
      if (timedOut) return timedOutResult(base, r.exitCode, r.signal ?? '');
      return {
        ...base,
        status: r.oomKilled ? { code: Code.RESOURCE_EXHAUSTED, message: `the command exceeded its memory limit and was killed (exit code ${r.exitCode})`, details: [] } : undefined,
        exitCode: r.exitCode,
        signal: r.signal ?? '',
        changes: wire,
      };
    } catch (e) {
      if (timedOut && !signal.aborted) return timedOutResult({ accessed: [], listed: [], stats });
      return this.failed(req, e, signal, stats);
    } finally {
      clearTimeout(deadlineTimer);
      clearTimeout(forceTimer);
      signal.removeEventListener('abort', onCancel);
      // The overlay first: it holds the FUSE mount as its lower layer.
      await overlay?.unmount();
      await mount?.close().catch((e: unknown) => this.o.log.warn({ err: e, mnt }, 'could not unmount a run'));
      // A mount that could not be removed is left with its directory: a
      // recursive delete would walk into it (and through it, into the client's
      // tree or the command's symlinks).
      const left = await mountsUnder(dir).catch(() => [dir]);
      if (left.length > 0) this.o.log.warn({ dir, mounts: left }, 'run directory still has mounts; leaving it');
      else await rm(dir, { recursive: true, force: true }).catch((e: unknown) => this.o.log.warn({ err: e, dir }, 'could not remove a run directory'));
    }
  }

  /** A run that could not be carried out, with the error's code (INTERNAL for an unexpected one). */
  private failed(req: RunRequest, e: unknown, signal: AbortSignal, stats?: RunStats): RunFinished {
    const code = codeOf(e);
    if (code === Code.UNKNOWN || code === Code.OK || code === Code.INTERNAL) this.o.log.error({ err: e, run: req.runId }, 'run failed');
    const status = toStatus(e, this.o.id);
    return {
      runId: req.runId,
      status: signal.aborted ? { ...status, code: Code.CANCELLED } : status,
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

/** `p`, or the stop signal's reason as soon as it fires: nothing of a run waits past its end. */
function untilStopped<T>(p: Promise<T>, stop: AbortSignal): Promise<T> {
  if (stop.aborted) {
    p.catch(() => undefined);
    return Promise.reject(stop.reason as Error);
  }
  return new Promise<T>((resolve, reject) => {
    const onStop = () => reject(stop.reason as Error);
    stop.addEventListener('abort', onStop, { once: true });
    p.then(
      (v) => {
        stop.removeEventListener('abort', onStop);
        resolve(v);
      },
      (e: unknown) => {
        stop.removeEventListener('abort', onStop);
        reject(e as Error);
      },
    );
  });
}
