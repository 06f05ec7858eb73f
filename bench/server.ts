import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ReapiClient } from '../src/reapi/reapi-client.js';
import { spawnServer, type ServerProcess } from '../support/spawn-server.js';

export interface BenchServer {
  server: ServerProcess;
  client: ReapiClient;
  dataDir: string;
  /** Stops the process and removes its data directory. */
  stop(): Promise<void>;
}

/** A fresh server process with its own data directory, and a client for it. */
export async function startBenchServer(extraArgs: string[] = []): Promise<BenchServer> {
  const dataDir = mkdtempSync(path.join(os.tmpdir(), 'repr-bench-'));
  let server: ServerProcess;
  try {
    server = await spawnServer(['--data-dir', dataDir, '--log-level', 'info', '--cas-size', '20GiB', ...extraArgs]);
  } catch (e) {
    rmSync(dataDir, { recursive: true, force: true });
    throw e;
  }
  const client = new ReapiClient({ target: server.address });
  return {
    server,
    client,
    dataDir,
    async stop() {
      client.close();
      await server.stop();
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

/** startBenchServer around `fn`, stopped however `fn` ends. */
export async function withServer<T>(
  fn: (s: { server: ServerProcess; client: ReapiClient; dataDir: string }) => Promise<T>,
  extraArgs: string[] = [],
): Promise<T> {
  const s = await startBenchServer(extraArgs);
  try {
    return await fn(s);
  } finally {
    await s.stop();
  }
}
