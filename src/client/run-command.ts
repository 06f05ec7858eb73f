import { readFile, realpath, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { type DigestFunction, SHA256 } from '../common/digest.js';
import { Code, invalidArgument, ReprError } from '../common/errors.js';
import { OutputChunk_Stream, type PathNode, type RunFinished } from '../proto/repr/run/v1/run.js';
import type { Discovery } from './discovery.js';
import { checkRoots, rootOf } from '../vfs/paths.js';
import { FileSource, type FileSourceStats } from './file-source.js';
import { ReapiClient } from '../reapi/reapi-client.js';
import { type DialTls, tlsFor } from '../grpc/dial.js';
import { applyChanges } from './run-changes.js';
import { RUN_FAILED_EXIT, RUN_INTERRUPTED_EXIT } from './exit-codes.js';
import { serverFailure } from './server-failure.js';
import { RunSession } from './run-client.js';
import { loadRecord, mappingsFor, recordDir, saveRecord } from './run-record.js';

export interface RunCommandOptions {
  discovery: Discovery;
  /** CAS target, if not the (first) server. */
  cas?: string;
  instanceName: string;
  fn?: DigestFunction;
  /** Commands to run: argv each. More than one fans out. */
  commands: string[][];
  /** How many commands run at once (each on its own executor). */
  parallel: number;
  cwd: string;
  roots: string[];
  env: { name: string; value: string }[];
  platform: { name: string; value: string }[];
  timeoutMs: number;
  /** Paths (absolute or relative to cwd) to send as mappings up front. */
  manifest?: string[];
  /** Record what each command touched and send it as mappings next time. */
  record: boolean;
  stats: boolean;
  statsJson?: string;
  /** Bearer token for servers that require one. */
  token?: string;
  /** How grpcs:// servers and CAS are dialled; plaintext ones ignore it. */
  tls?: DialTls;
  stdout: NodeJS.WritableStream;
  stderr: NodeJS.WritableStream;
}

export interface CommandOutcome {
  argv: string[];
  finished?: RunFinished;
  error?: string;
  changedBytes: number;
  mappings: number;
  wallMs: number;
  /** Client-side phases: building mappings before the request, applying changes after it. */
  mappingMs: number;
  applyMs: number;
}

/**
 * `repr run`: runs the commands remotely, each seeing the client's roots,
 * streams their output, applies their changes, and returns the exit code
 * (the command's; with several, the first non-zero one).
 */
export async function runCommands(o: RunCommandOptions): Promise<{ exitCode: number; outcomes: CommandOutcome[]; client: FileSourceStats }> {
  const fn = o.fn ?? SHA256;
  // The command sees real paths: a symlinked project dir would otherwise show
  // up twice, under two names.
  const cwd = await realpath(o.cwd);
  const roots = await runRoots(o.roots.length > 0 ? o.roots.map((r) => path.resolve(cwd, r)) : [cwd]);
  if (!rootOf(cwd, roots)) throw new ReprError(Code.INVALID_ARGUMENT, `the working directory ${cwd} is not inside a root (${roots.join(', ')}); add --root`);
  const servers = await o.discovery.servers();
  const dialTls = (target: string) => {
    const tls = tlsFor(target, o.tls);
    return tls ? { tls } : {};
  };
  const casTarget = o.cas ?? servers[0]!;
  const cas = new ReapiClient({ target: casTarget, instanceName: o.instanceName, digestFunction: fn, token: o.token, ...dialTls(casTarget) });
  const files = new FileSource(cas, fn);
  const sessions = servers.map((s) => new RunSession(s, files, { instanceName: o.instanceName, fn, token: o.token, ...dialTls(s) }));
  const records = recordDir();
  const manifest = (o.manifest ?? []).map((p) => path.resolve(cwd, p)).filter((p) => rootOf(p, roots));
  const outcomes: CommandOutcome[] = [];
  let interrupted = false;
  const onSignal = () => {
    interrupted = true;
    for (const s of sessions) s.cancelAll();
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  try {
    let next = 0;
    const lane = async (lane: number) => {
      while (next < o.commands.length && !interrupted) {
        const i = next++;
        const argv = o.commands[i]!;
        const started = performance.now();
        const outcome: CommandOutcome = { argv, changedBytes: 0, mappings: 0, wallMs: 0, mappingMs: 0, applyMs: 0 };
        outcomes[i] = outcome;
        const session = sessions[(lane + i) % sessions.length]!;
        try {
          const rec = o.record ? await loadRecord(records, argv, cwd, roots) : undefined;
          if (rec?.hashes) files.seedHashes(rec.hashes);
          const mappings: PathNode[] = await mappingsFor([...roots, ...manifest, ...(rec?.accessed ?? [])], rec?.listed ?? [], files, fn);
          outcome.mappings = mappings.length;
          outcome.mappingMs = performance.now() - started;
          const finished = await session.run({
            argv,
            env: o.env,
            cwd,
            roots,
            mappings,
            platform: o.platform,
            timeoutMs: o.timeoutMs,
            onOutput: (stream, data) => (stream === OutputChunk_Stream.STDERR ? o.stderr : o.stdout).write(data),
          });
          outcome.finished = finished;
          if (!finished.status || finished.status.code === Code.OK) {
            const applying = performance.now();
            outcome.changedBytes = await applyChanges(finished.changes, roots, cas, fn);
            outcome.applyMs = performance.now() - applying;
            if (o.record)
              await saveRecord(records, roots, {
                argv,
                cwd,
                accessed: finished.accessed,
                listed: finished.listed,
                hashes: await files.knownHashes(finished.accessed),
              });
          } else {
            outcome.error = `${Code[finished.status.code] ?? finished.status.code}: ${finished.status.message}`;
          }
        } catch (e) {
          // grpc-js's "14 UNAVAILABLE: " prefix adds nothing to the details.
          outcome.error = serverFailure(e, session.target, 'repr run');
        }
        outcome.wallMs = performance.now() - started;
        if (outcome.error) o.stderr.write(`repr run: ${argv.join(' ')}: ${outcome.error}\n`);
        if (o.stats) o.stderr.write(formatStats(outcome, files.stats));
      }
    };
    await Promise.all(Array.from({ length: Math.max(1, Math.min(o.parallel, o.commands.length)) }, (_, k) => lane(k)));
  } finally {
    process.removeListener('SIGINT', onSignal);
    process.removeListener('SIGTERM', onSignal);
    await Promise.all(sessions.map((s) => s.close()));
    cas.close();
  }
  if (o.statsJson) {
    await writeFile(
      o.statsJson,
      JSON.stringify(
        {
          client: files.stats,
          runs: outcomes.map((x) => ({
            argv: x.argv,
            exitCode: x.finished?.exitCode,
            status: x.finished?.status?.code ?? 0,
            error: x.error,
            mappings: x.mappings,
            wallMs: x.wallMs,
            mappingMs: x.mappingMs,
            applyMs: x.applyMs,
            stats: x.finished?.stats,
          })),
        },
        null,
        2,
      ),
    );
  }
  let exitCode = 0;
  for (const x of outcomes) {
    if (!x) continue;
    const c = x.error ? RUN_FAILED_EXIT : (x.finished?.exitCode ?? RUN_FAILED_EXIT);
    if (c !== 0) {
      exitCode = c;
      break;
    }
  }
  if (interrupted && exitCode === 0) exitCode = RUN_INTERRUPTED_EXIT;
  return { exitCode, outcomes, client: files.stats };
}

/** The roots as the command sees them (real paths), refused in one line naming --root when one is not a directory here or is not allowed. */
export async function runRoots(dirs: string[]): Promise<string[]> {
  const real = await Promise.all(
    dirs.map(async (dir) => {
      try {
        const r = await realpath(dir);
        if ((await stat(r)).isDirectory()) return r;
      } catch (e) {
        const why = (e as NodeJS.ErrnoException).code === 'ENOENT' ? 'does not exist' : `cannot be read (${(e as Error).message})`;
        throw invalidArgument(`root ${dir} ${why}; --root takes a directory on this machine`);
      }
      throw invalidArgument(`root ${dir} is not a directory; --root takes a directory on this machine`);
    }),
  );
  try {
    return checkRoots(real);
  } catch (e) {
    throw e instanceof ReprError ? new ReprError(e.code, `${e.message} (--root, or run repr from inside the project)`) : e;
  }
}

/** Reads a batch file: one shell command per line; blank lines and # comments skipped. */
export async function readBatch(file: string): Promise<string[][]> {
  const text = file === '-' ? await readStdin() : await readFile(file, 'utf8');
  return text
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l && !l.startsWith('#'))
    .map((l) => ['/bin/sh', '-c', l]);
}

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of process.stdin) chunks.push(c as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

const ms = (us: number | undefined) => `${((us ?? 0) / 1000).toFixed(1)} ms`;

function formatStats(x: CommandOutcome, client: FileSourceStats): string {
  const s = x.finished?.stats;
  const lines = [`repr run: ${x.argv.join(' ')}`];
  lines.push(
    `  exit ${x.finished?.exitCode ?? '-'}; wall ${x.wallMs.toFixed(0)} ms: mappings ${x.mappingMs.toFixed(1)} ms, executor setup ${ms(s?.setupUs)}, command ${ms(s?.runUs)}, applying changes ${x.applyMs.toFixed(1)} ms`,
  );
  lines.push(
    `  files: ${x.mappings} mapped up front, ${s?.mappedHits ?? 0} lookups served from mappings, ${s?.queries ?? 0} asked on demand, blocked on this client ${ms(s?.blockedOnClientUs)}`,
  );
  lines.push(
    `  bytes: ${s?.bytesFetched ?? 0} fetched by the worker, ${client.uploadedBytes} uploaded by this client in ${client.uploadedBlobs} blobs (session total), ${x.changedBytes} written back`,
  );
  if (s && s.top.length > 0) {
    lines.push('  costliest files:');
    for (const t of s.top) lines.push(`    ${(t.micros / 1000).toFixed(2).padStart(8)} ms ${String(t.bytes).padStart(9)} B  ${t.path}`);
  }
  return `${lines.join('\n')}\n`;
}
