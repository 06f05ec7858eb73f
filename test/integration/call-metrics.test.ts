import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { computeDigest, SHA256 } from '../../src/common/digest.js';
import { Code } from '../../src/common/errors.js';
import { ReapiClient } from '../../src/reapi/reapi-client.js';
import { metricValue, scrapeMetrics } from '../../support/metrics.js';
import { type ServerProcess, startServerProcess } from '../../support/servers.js';
import { tmpDir } from '../../support/tmp.js';

const TOKEN = 'call-metrics-token-0123456789abcdef';
const calls = (text: string, method: string, code: string) => metricValue(text, `repr_grpc_server_handling_seconds_count{method="${method}",code="${code}"}`);

/**
 * Calls are timed in the handler wrapper and, when refused, by the access
 * check: each kind of call ends its own way (a unary callback, a stream's
 * end or error event), and each must be counted once with its real code.
 */
describe('per-call metrics', () => {
  let server: ServerProcess;
  before(async () => {
    const dir = tmpDir('repr-call-metrics-');
    const tokens = path.join(dir, 'tokens');
    writeFileSync(tokens, `ci:${TOKEN} ci\n`);
    server = await startServerProcess(['--data-dir', path.join(dir, 'data'), '--cache-only', '--auth-tokens-file', tokens, '--metrics-listen', '127.0.0.1:0']);
  });
  after(() => server?.stop());

  it('counts unary, client-streaming and server-streaming calls with their codes, and refusals', async () => {
    const ci = new ReapiClient({ target: server.address, token: TOKEN });
    const anonymous = new ReapiClient({ target: server.address });
    const blob = Buffer.from('counted once');
    const d = computeDigest(SHA256, blob);
    try {
      await ci.write(d, blob); // client-streaming, OK
      assert.deepEqual(await ci.read(d), blob); // server-streaming, OK
      await assert.rejects(ci.read(computeDigest(SHA256, Buffer.from('absent'))), (e: { code?: number }) => e.code === Code.NOT_FOUND);
      await assert.rejects(ci.getActionResult(d), (e: { code?: number }) => e.code === Code.NOT_FOUND); // unary, an error
      await ci.getCapabilities(); // unary, OK
      await assert.rejects(anonymous.getCapabilities(), (e: { code?: number }) => e.code === Code.UNAUTHENTICATED);
    } finally {
      ci.close();
      anonymous.close();
    }
    const text = await scrapeMetrics(server);
    assert.equal(calls(text, '/google.bytestream.ByteStream/Write', 'OK'), 1);
    assert.equal(calls(text, '/google.bytestream.ByteStream/Read', 'OK'), 1);
    assert.equal(calls(text, '/google.bytestream.ByteStream/Read', 'NOT_FOUND'), 1);
    assert.equal(calls(text, '/build.bazel.remote.execution.v2.ActionCache/GetActionResult', 'NOT_FOUND'), 1);
    assert.equal(calls(text, '/build.bazel.remote.execution.v2.Capabilities/GetCapabilities', 'OK'), 1);
    assert.equal(calls(text, '/build.bazel.remote.execution.v2.Capabilities/GetCapabilities', 'UNAUTHENTICATED'), 1, 'refused by the access check');
  });
});
