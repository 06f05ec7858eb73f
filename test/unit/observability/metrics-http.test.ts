import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { Counter, Registry } from 'prom-client';
import { Code, codeOf } from '../../../src/common/errors.js';
import { silentLogger } from '../../../src/common/logger.js';
import { type MetricsServer, startMetricsServer } from '../../../src/observability/metrics-http.js';

describe('metrics endpoint', () => {
  const registry = new Registry();
  let server: MetricsServer;

  before(async () => {
    new Counter({ name: 'repr_test_things_total', help: 'Things.', registers: [registry] }).inc(7);
    server = await startMetricsServer('127.0.0.1:0', registry, silentLogger(), { defaultMetrics: true });
  });
  after(() => server.close());

  it('reports the real port', () => {
    assert.ok(server.port > 0);
    assert.equal(server.address, `127.0.0.1:${server.port}`);
  });

  it('serves the registry in the Prometheus text format', async () => {
    const res = await fetch(`http://${server.address}/metrics`);
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('content-type'), registry.contentType);
    assert.match(res.headers.get('content-type') ?? '', /^text\/plain; version=0\.0\.4/);
    const body = await res.text();
    assert.match(body, /^repr_test_things_total 7$/m);
    // Asked for with defaultMetrics.
    assert.match(body, /^process_cpu_user_seconds_total /m);
  });

  it('answers /healthz with ok', async () => {
    const res = await fetch(`http://${server.address}/healthz`);
    assert.equal(res.status, 200);
    assert.equal(await res.text(), 'ok');
  });

  it('answers other paths with 404 and other methods with 405', async () => {
    assert.equal((await fetch(`http://${server.address}/`)).status, 404);
    assert.equal((await fetch(`http://${server.address}/metrics/x`)).status, 404);
    assert.equal((await fetch(`http://${server.address}/metrics`, { method: 'POST', body: 'x' })).status, 405);
  });
});

describe('metrics endpoint setup', () => {
  it('leaves process metrics out unless asked', async () => {
    const registry = new Registry();
    const server = await startMetricsServer('127.0.0.1:0', registry, silentLogger());
    try {
      const body = await (await fetch(`http://${server.address}/metrics`)).text();
      assert.doesNotMatch(body, /process_cpu_user_seconds_total/);
    } finally {
      await server.close();
    }
  });

  it('refuses an address that is not host:port', async () => {
    await assert.rejects(startMetricsServer('9090', new Registry(), silentLogger()), (e: unknown) => codeOf(e) === Code.INVALID_ARGUMENT);
    await assert.rejects(startMetricsServer('localhost:http', new Registry(), silentLogger()), /not host:port/);
  });

  it('fails clearly when the port is taken', async () => {
    const a = await startMetricsServer('127.0.0.1:0', new Registry(), silentLogger());
    try {
      await assert.rejects(startMetricsServer(a.address, new Registry(), silentLogger()), /cannot listen for metrics/);
    } finally {
      await a.close();
    }
  });
});
