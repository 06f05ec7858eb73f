import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { createInterface } from 'node:readline';

/** The launcher script, from dist/src/server/. */
export const REPR_BIN = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'bin', 'repr.js');

export interface ServerProcess {
  child: ChildProcess;
  /** host:port it bound. */
  address: string;
  /** grpc://address, or grpcs://address for a server with TLS: as Bazel and repr's clients want it. */
  url: string;
  /** Everything it printed. */
  logs: string[];
  /** Signals it and waits for it to exit; resolves to the exit code. */
  stop(signal?: NodeJS.Signals): Promise<number | null>;
}

/**
 * Starts `repr server` as a child process on a free loopback port and waits
 * for its "listening" log line, for tests and benchmarks that want a real
 * server process rather than an in-process one.
 */
export async function spawnServer(args: string[], timeoutMs = 20_000): Promise<ServerProcess> {
  let address = '';
  let tls = false;
  const p = await spawnRepr(
    ['server', '--listen', '127.0.0.1:0', ...args],
    (rec) => {
      if (rec.msg === 'repr server listening' && typeof rec.address === 'string') {
        address = rec.address;
        tls = rec.tls === true;
      }
      return address !== '';
    },
    timeoutMs,
  );
  return { ...p, address, url: `${tls ? 'grpcs' : 'grpc'}://${address}` };
}

export type WorkerProcess = Omit<ServerProcess, 'address' | 'url'>;

/** Starts `repr worker` and waits until it has registered with its scheduler. */
export function spawnWorker(schedulerUrl: string, args: string[], timeoutMs = 20_000): Promise<WorkerProcess> {
  return spawnRepr(['worker', '--scheduler', schedulerUrl, ...args], (rec) => rec.msg === 'registered with the scheduler', timeoutMs);
}

/** Runs `repr ARGS...` and resolves once a JSON log line satisfies `ready`, which also gets the process (logs hold every line, later ones too). */
export async function spawnRepr(
  args: string[],
  ready: (rec: Record<string, unknown>, child: ChildProcess) => boolean,
  timeoutMs: number,
): Promise<WorkerProcess> {
  const child = spawn(process.execPath, [REPR_BIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  const logs: string[] = [];
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  child.stderr!.on('data', (d: Buffer) => logs.push(d.toString()));
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`repr ${args[0]} was not ready in ${timeoutMs} ms:\n${logs.join('')}`));
    }, timeoutMs);
    const rl = createInterface({ input: child.stdout! });
    let done = false;
    rl.on('line', (line) => {
      logs.push(line);
      if (done) return;
      try {
        if (ready(JSON.parse(line) as Record<string, unknown>, child)) {
          done = true;
          clearTimeout(timer);
          resolve();
        }
      } catch {
        /* not a log line */
      }
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      if (!done) reject(new Error(`repr ${args[0]} exited with ${code} before it was ready:\n${logs.join('')}`));
    });
  });
  return {
    child,
    logs,
    stop: async (signal: NodeJS.Signals = 'SIGTERM') => {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      return exited;
    },
  };
}

/** Where and as whom `runReprToEnd` runs repr. */
export interface RunOptions {
  timeoutMs?: number;
  cwd?: string;
  /** Added to this process's environment. */
  env?: Record<string, string>;
  uid?: number;
  gid?: number;
  /** The program to run instead of `node bin/repr.js` (an installed `repr`). */
  command?: string;
}

/**
 * Runs `repr ARGS` until it exits by itself (killed after `timeoutMs`): its
 * output and exit code, for tests of what the CLI tells a user.
 */
export function runReprToEnd(args: string[], o: RunOptions = {}): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const [file, argv] = o.command ? [o.command, args] : [process.execPath, [REPR_BIN, ...args]];
    const child = spawn(file, argv, {
      stdio: ['ignore', 'pipe', 'pipe'],
      ...(o.cwd ? { cwd: o.cwd } : {}),
      ...(o.env ? { env: { ...process.env, ...o.env } } : {}),
      ...(o.uid !== undefined ? { uid: o.uid } : {}),
      ...(o.gid !== undefined ? { gid: o.gid } : {}),
    });
    let stdout = '';
    let stderr = '';
    child.stdout!.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), o.timeoutMs ?? 60_000);
    child.once('error', reject);
    child.once('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

/** The first JSON log record of `p`, printed before or after the call, that satisfies `match`. */
export async function waitForLog(p: WorkerProcess, match: (rec: Record<string, unknown>) => boolean, timeoutMs = 20_000): Promise<Record<string, unknown>> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    for (const line of p.logs) {
      try {
        const rec = JSON.parse(line) as Record<string, unknown>;
        if (match(rec)) return rec;
      } catch {
        /* stderr output or not a log line */
      }
    }
    if (Date.now() > deadline) throw new Error(`no matching log line in ${timeoutMs} ms:\n${p.logs.join('')}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
