import assert from 'node:assert/strict';
import { copyFileSync, readFileSync } from 'node:fs';
import https from 'node:https';
import path from 'node:path';
import type { TLSSocket } from 'node:tls';
import { after, before, describe, it } from 'node:test';
import { Counter, Registry } from 'prom-client';
import { Code, codeOf } from '../../../src/common/errors.js';
import { silentLogger } from '../../../src/common/logger.js';
import { ServerTls } from '../../../src/grpc/tls.js';
import { type MetricsServer, startMetricsServer } from '../../../src/observability/metrics-http.js';
import { type CertAuthority, makeCertAuthority } from '../../../support/certs.js';
import { tmpDir } from '../../../support/tmp.js';

describe('metrics endpoint', () => {
  const registry = new Registry();
  let server: MetricsServer;
  let readiness = { ready: false, waitingFor: ['storage index'] };

  before(async () => {
    new Counter({ name: 'repr_test_things_total', help: 'Things.', registers: [registry] }).inc(7);
    server = await startMetricsServer('127.0.0.1:0', registry, silentLogger(), { defaultMetrics: true, readiness: () => readiness });
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

  it('answers /readyz with 503 and what it waits for until ready, 200 when ready, 503 when stopping; /healthz stays ok', async () => {
    const get = async (route: string) => {
      const res = await fetch(`http://${server.address}${route}`);
      return [res.status, await res.text()];
    };
    assert.deepEqual(await get('/readyz'), [503, 'not ready: waiting for storage index']);
    assert.deepEqual(await get('/healthz'), [200, 'ok'], 'alive while not ready: nothing to restart');
    readiness = { ready: true, waitingFor: [] };
    assert.deepEqual(await get('/readyz'), [200, 'ready']);
    readiness = { ready: false, waitingFor: [] };
    assert.deepEqual(await get('/readyz'), [503, 'not ready: stopping']);
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

/** GET over HTTPS; resolves with the status and the server certificate's serial, or rejects as the handshake did. */
function httpsGet(url: string, opts: { ca: Buffer; cert?: Buffer; key?: Buffer }): Promise<{ status: number; body: string; serial: string }> {
  return new Promise((resolve, reject) => {
    const req = https.get(url, { ...opts, agent: false }, (res) => {
      const serial = (res.socket as TLSSocket).getPeerCertificate().serialNumber;
      let body = '';
      res.on('data', (d: Buffer) => (body += d.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body, serial }));
    });
    req.on('error', reject);
  });
}

describe('metrics endpoint over HTTPS', () => {
  let ca: CertAuthority;
  const live = { certFile: '', keyFile: '' };
  before(() => {
    const dir = tmpDir();
    ca = makeCertAuthority(dir);
    Object.assign(live, { certFile: path.join(dir, 'live.pem'), keyFile: path.join(dir, 'live.key') });
    const first = ca.server('first');
    copyFileSync(first.key, live.keyFile);
    copyFileSync(first.cert, live.certFile);
  });

  const start = (tls: ServerTls, requireClientCert: boolean) =>
    startMetricsServer('127.0.0.1:0', new Registry(), silentLogger(), {
      tls: { secureContextOptions: () => tls.secureContextOptions(), onChange: (l) => tls.onChange(l), requireClientCert },
    });

  it('serves with the listener certificate, and the new one after a rotation', async () => {
    const tls = ServerTls.open({ ...live, reloadIntervalMs: 3_600_000, log: silentLogger() });
    const server = await start(tls, false);
    const caPem = readFileSync(ca.cert);
    try {
      const before = await httpsGet(`https://${server.address}/healthz`, { ca: caPem });
      assert.deepEqual([before.status, before.body], [200, 'ok']);
      assert.equal(before.serial, tls.current.serial);
      await assert.rejects(fetch(`http://${server.address}/healthz`), 'no plaintext on an HTTPS endpoint');
      await assert.rejects(
        httpsGet(`https://${server.address}/healthz`, { ca: readFileSync(makeCertAuthority(tmpDir(), 'stranger').cert) }),
        /self-signed|unable to verify/,
      );

      const second = ca.server('second');
      copyFileSync(second.key, live.keyFile);
      copyFileSync(second.cert, live.certFile);
      assert.equal(await tls.check(), true);
      const after = await httpsGet(`https://${server.address}/metrics`, { ca: caPem });
      assert.equal(after.status, 200);
      assert.equal(after.serial, tls.current.serial);
      assert.notEqual(after.serial, before.serial);
    } finally {
      await server.close();
      tls.close();
    }
  });

  it('asks scrapers for a client certificate of the client CA only when told to', async () => {
    const tls = ServerTls.open({ ...live, clientCaFile: ca.cert, reloadIntervalMs: 3_600_000, log: silentLogger() });
    const open = await start(tls, false);
    const strict = await start(tls, true);
    const caPem = readFileSync(ca.cert);
    const prometheus = ca.client('prometheus');
    const stranger = makeCertAuthority(tmpDir(), 'stranger').client('prometheus');
    try {
      assert.equal((await httpsGet(`https://${open.address}/healthz`, { ca: caPem })).status, 200, 'no client certificate needed by default');
      await assert.rejects(httpsGet(`https://${strict.address}/healthz`, { ca: caPem }), 'refused without a client certificate');
      await assert.rejects(
        httpsGet(`https://${strict.address}/healthz`, { ca: caPem, cert: readFileSync(stranger.cert), key: readFileSync(stranger.key) }),
        "refused with another CA's certificate",
      );
      const ok = await httpsGet(`https://${strict.address}/healthz`, { ca: caPem, cert: readFileSync(prometheus.cert), key: readFileSync(prometheus.key) });
      assert.equal(ok.status, 200);
    } finally {
      await open.close();
      await strict.close();
      tls.close();
    }
  });
});
