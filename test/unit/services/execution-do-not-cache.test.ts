import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { fromWire, SHA256 } from '../../../src/common/digest.js';
import { Code } from '../../../src/common/errors.js';
import { ReapiClient } from '../../../src/reapi/reapi-client.js';
import { ExecClient, uploadAction } from '../../../src/client/execution-client.js';
import type { ReprServer } from '../../../src/server/server.js';
import { startInProcess } from '../../../support/servers.js';
import { tmpDir } from '../../../support/tmp.js';

describe('do_not_cache actions', () => {
  let server: ReprServer;
  let client: ReapiClient;
  let exec: ExecClient;

  before(async () => {
    server = await startInProcess({ dataDir: tmpDir(), execution: { executors: 2 } });
    client = new ReapiClient({ target: server.address });
    exec = new ExecClient(server.address);
  });
  after(async () => {
    client.close();
    exec.close();
    await server.stop();
  });

  it('are never merged with an identical in-flight execution: each request runs', async () => {
    // Random output shows that each request ran the command itself.
    const action = await uploadAction(client, { argv: ['/bin/sh', '-c', 'sleep 1; od -An -N16 -tx1 /dev/urandom'], doNotCache: true, salt: 'no merge' });
    const [a, b] = await Promise.all([exec.execute(action), exec.execute(action)]);
    assert.notEqual(a.name, b.name, 'two operations');
    for (const r of [a, b]) {
      assert.equal(r.response!.status?.code ?? Code.OK, Code.OK);
      assert.equal(r.response!.cachedResult, false);
      assert.equal(r.response!.result!.exitCode, 0);
    }
    const [outA, outB] = await Promise.all([a, b].map((r) => client.read(fromWire(SHA256, r.response!.result!.stdoutDigest))));
    assert.equal(outA!.length > 0, true);
    assert.notDeepEqual(outA, outB, 'both ran');
  });
});
