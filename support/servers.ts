import path from 'node:path';
import { after, before } from 'node:test';
import { ReapiClient } from '../src/reapi/reapi-client.js';
import { ExecClient } from '../src/client/execution-client.js';
import { tmpDir } from './tmp.js';
import { fileURLToPath } from 'node:url';
import { silentLogger } from '../src/common/logger.js';
import { compileServerConfig, type ServerConfigInput } from '../src/config/config.js';
import { ReprServer } from '../src/server/server.js';

export { spawnServer as startServerProcess, type ServerProcess } from './spawn-server.js';

/** Repository root, from dist/test/helpers/. */
export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

/** An in-process server on a free loopback port. */
export async function startInProcess(input: ServerConfigInput & { dataDir: string }): Promise<ReprServer> {
  return ReprServer.start(compileServerConfig({ listen: '127.0.0.1:0', ...input }), silentLogger());
}

export { spawnWorker, type WorkerProcess } from './spawn-server.js';
export { fetchStatus, waitForStatus } from '../src/client/status-client.js';

/**
 * An in-process server with a CAS client and an Execution client, started
 * before the enclosing describe's tests and stopped after them.
 */
export function useExecServer(input: ServerConfigInput): { readonly server: ReprServer; readonly client: ReapiClient; readonly exec: ExecClient } {
  const s = {} as { server: ReprServer; client: ReapiClient; exec: ExecClient };
  before(async () => {
    s.server = await startInProcess({ dataDir: tmpDir(), ...input });
    s.client = new ReapiClient({ target: s.server.address });
    s.exec = new ExecClient(s.server.address);
  });
  after(async () => {
    s.client.close();
    s.exec.close();
    await s.server.stop();
  });
  return s;
}
