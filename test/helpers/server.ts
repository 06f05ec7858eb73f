import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { silentLogger } from '../../src/common/logger.js';
import { compileServerConfig, type ServerConfigInput } from '../../src/config/config.js';
import { ReprServer } from '../../src/server/server.js';

export { spawnServer as startServerProcess, type ServerProcess } from '../../src/server/spawn-server.js';

/** Repository root, from dist/test/helpers/. */
export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..');

/** An in-process server on a free loopback port. */
export async function startInProcess(input: ServerConfigInput & { dataDir: string }): Promise<ReprServer> {
  return ReprServer.start(compileServerConfig({ listen: '127.0.0.1:0', ...input }), silentLogger());
}

export { spawnWorker, type WorkerProcess } from '../../src/server/spawn-server.js';
export { fetchStatus, waitForStatus } from '../../src/client/status-client.js';
