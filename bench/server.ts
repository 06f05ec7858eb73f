import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ReapiClient } from '../src/reapi/reapi-client.js';
import { spawnServer, type ServerProcess } from '../support/spawn-server.js';

/** A fresh server process with its own data directory, and a client for it. */
export async function withServer<T>(
  fn: (s: { server: ServerProcess; client: ReapiClient; dataDir: string }) => Promise<T>,
  extraArgs: string[] = [],
): Promise<T> {
  const dataDir = mkdtempSync(path.join(os.tmpdir(), 'repr-bench-'));
  const server = await spawnServer(['--data-dir', dataDir, '--log-level', 'info', '--cas-size', '20GiB', ...extraArgs]);
  const client = new ReapiClient({ target: server.address });
  try {
    return await fn({ server, client, dataDir });
  } finally {
    client.close();
    await server.stop();
    rmSync(dataDir, { recursive: true, force: true });
  }
}
