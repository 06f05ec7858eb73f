import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { createInterface } from 'node:readline';

/** The launcher script, from dist/src/server/. */
export const REPR_BIN = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..', 'bin', 'repr.js');

export interface ServerProcess {
  child: ChildProcess;
  /** host:port it bound. */
  address: string;
  /** grpc://address, as Bazel wants it. */
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
  const child = spawn(process.execPath, [REPR_BIN, 'server', '--listen', '127.0.0.1:0', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  const logs: string[] = [];
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  child.stderr!.on('data', (d: Buffer) => logs.push(d.toString()));
  const address = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`repr server did not start in ${timeoutMs} ms:\n${logs.join('')}`));
    }, timeoutMs);
    const rl = createInterface({ input: child.stdout! });
    rl.on('line', (line) => {
      logs.push(line);
      try {
        const rec = JSON.parse(line) as { msg?: string; address?: string };
        if (rec.msg === 'repr server listening' && rec.address) {
          clearTimeout(timer);
          resolve(rec.address);
        }
      } catch {
        /* not a log line */
      }
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`repr server exited with ${code} before listening:\n${logs.join('')}`));
    });
  });
  return {
    child,
    address,
    url: `grpc://${address}`,
    logs,
    stop: async (signal: NodeJS.Signals = 'SIGTERM') => {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      return exited;
    },
  };
}
