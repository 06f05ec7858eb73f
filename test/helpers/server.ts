import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { createInterface } from 'node:readline';
import { silentLogger } from '../../src/common/logger.js';
import { compileServerConfig, type ServerConfigInput } from '../../src/config/config.js';
import { ReprServer } from '../../src/server/server.js';

/** Repository root, from dist/test/helpers/. */
export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
export const REPR_BIN = path.join(REPO_ROOT, 'bin', 'repr.js');

/** An in-process server on a free loopback port. */
export async function startInProcess(input: ServerConfigInput & { dataDir: string }): Promise<ReprServer> {
  return ReprServer.start(compileServerConfig({ listen: '127.0.0.1:0', ...input }), silentLogger());
}

export interface ServerProcess {
  child: ChildProcess;
  address: string;
  /** grpc://address, as Bazel wants it. */
  url: string;
  stop(signal?: NodeJS.Signals): Promise<number | null>;
  logs: string[];
}

/**
 * Starts `repr server` as a separate process on a free port and waits for it
 * to report the address it bound.
 */
export async function startServerProcess(args: string[], timeoutMs = 20_000): Promise<ServerProcess> {
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
