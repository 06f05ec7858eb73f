import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { describe, it } from 'node:test';
import { type Interceptor, InterceptingCall } from '@grpc/grpc-js';
import { computeDigest, SHA256 } from '../../../src/common/digest.js';
import { Code } from '../../../src/common/errors.js';
import { tracingEnabled } from '../../../src/common/tracing.js';
import { ReapiClient } from '../../../src/reapi/reapi-client.js';
import { startOtlpReceiver } from '../../../support/otlp-receiver.js';
import { startInProcess } from '../../../support/servers.js';
import { tmpDir } from '../../../support/tmp.js';

const TOKEN = 'rpc-tracing-token-0123456789';
const OTLP_ERROR = 2;

const withTraceparent =
  (traceparent: string): Interceptor =>
  (options, nextCall) =>
    new InterceptingCall(nextCall(options), {
      start: (metadata, listener, next) => {
        metadata.set('traceparent', traceparent);
        next(metadata, listener);
      },
    });

describe('RPC spans', () => {
  it("cover calls the access check refuses, continue a client's traceparent, and stop with the server", async () => {
    const rx = await startOtlpReceiver();
    const server = await startInProcess({
      dataDir: tmpDir(),
      execution: { enabled: false },
      auth: { tokens: [{ name: 'ci', token: TOKEN, roles: ['ci'] }], anonymous: false },
      tracing: { otlpEndpoint: rx.url },
    });
    assert.ok(tracingEnabled());
    const traceId = randomBytes(16).toString('hex');
    const parent = randomBytes(8).toString('hex');
    const anonymous = new ReapiClient({ target: server.address });
    const ci = new ReapiClient({ target: server.address, token: TOKEN, interceptors: [withTraceparent(`00-${traceId}-${parent}-01`)] });
    try {
      await assert.rejects(anonymous.getActionResult(computeDigest(SHA256, Buffer.from('a'))), (e: { code?: number }) => e.code === Code.UNAUTHENTICATED);
      await ci.getCapabilities();
      await assert.rejects(ci.read(computeDigest(SHA256, Buffer.from('nowhere'))), (e: { code?: number }) => e.code === Code.NOT_FOUND);
    } finally {
      anonymous.close();
      ci.close();
      await server.stop();
    }
    // Stopping flushed the spans and turned tracing off for whatever runs next in this process.
    assert.equal(tracingEnabled(), false);
    await rx.close();

    const byName = (n: string) => rx.spans.find((s) => s.name === n);
    const refused = byName('build.bazel.remote.execution.v2.ActionCache/GetActionResult');
    assert.ok(refused, `spans: ${rx.spans.map((s) => s.name).join(', ')}`);
    assert.equal(refused.attributes['rpc.grpc.status_code'], Code.UNAUTHENTICATED);
    assert.equal(refused.parentSpanId, '');
    const caps = byName('build.bazel.remote.execution.v2.Capabilities/GetCapabilities');
    assert.equal(caps?.traceId, traceId);
    assert.equal(caps?.parentSpanId, parent);
    assert.equal(caps?.attributes['rpc.grpc.status_code'], Code.OK);
    assert.equal(caps?.attributes['rpc.service'], 'build.bazel.remote.execution.v2.Capabilities');
    assert.equal(caps?.attributes['rpc.method'], 'GetCapabilities');
    const read = byName('google.bytestream.ByteStream/Read');
    assert.equal(read?.traceId, traceId);
    assert.equal(read?.attributes['rpc.grpc.status_code'], Code.NOT_FOUND);
    assert.notEqual(read?.status.code, OTLP_ERROR);
  });
});
