import assert from 'node:assert/strict';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Code, codeOf } from '../../../src/common/errors.js';
import { type DialTls, dial, isTlsTarget, normalizeTarget, tlsFor } from '../../../src/grpc/dial.js';
import { WINDOW_BYTES } from '../../../src/grpc/http2-windows.js';
import { fetchStatus } from '../../../src/client/status-client.js';
import { ReapiClient } from '../../../src/reapi/reapi-client.js';
import type { ReprServer } from '../../../src/server/server.js';
import { startInProcess } from '../../../support/servers.js';
import { makeCertAuthority } from '../../../support/certs.js';
import { tmpDir } from '../../../support/tmp.js';

const TOKEN = 'dial-test-0123456789abcdef';

describe('dial', () => {
  it('takes grpc://host:port or host:port and gives grpc-js what it needs', () => {
    for (const target of ['grpc://cas.example.com:8980', 'cas.example.com:8980', ' grpc://cas.example.com:08980 ']) {
      const d = dial(target);
      assert.equal(d.target, 'grpc://cas.example.com:8980', target);
      assert.equal(d.address, 'cas.example.com:8980', target);
    }
    assert.equal(dial('[::1]:1').address, '[::1]:1');
    const d = dial('h:1');
    assert.equal(d.options['grpc-node.flow_control_window'], WINDOW_BYTES);
    assert.equal(d.options['grpc.max_receive_message_length'], -1);
    assert.equal(d.options['grpc.keepalive_time_ms'], undefined, 'no pings unless asked: some servers close connections that ping');
    assert.equal(d.interceptors.length, 1, 'the one that explains failed connections');
    assert.equal(d.credentials._isSecure(), false);
    const kept = dial('h:1', { token: TOKEN, keepaliveMs: 20_000, keepaliveTimeoutMs: 10_000 });
    assert.equal(kept.options['grpc.keepalive_time_ms'], 20_000);
    assert.equal(kept.options['grpc.keepalive_timeout_ms'], 10_000);
    assert.equal(kept.interceptors.length, 2);
    assert.equal(kept.options.interceptors, kept.interceptors);
  });

  it('dials grpcs://host:port with TLS, keeping the scheme in the target', () => {
    for (const target of ['grpcs://cas.example.com:443', ' GRPCS://cas.example.com:0443 ']) {
      const d = dial(target);
      assert.equal(d.target, 'grpcs://cas.example.com:443', target);
      assert.equal(d.address, 'cas.example.com:443', target);
      assert.equal(d.credentials._isSecure(), true, target);
    }
    assert.equal(normalizeTarget('grpcs://[::1]:8980'), 'grpcs://[::1]:8980');
    assert.equal(dial('grpcs://[::1]:8980').address, '[::1]:8980');
    assert.equal(isTlsTarget('grpcs://h:1'), true);
    assert.equal(isTlsTarget('grpc://h:1'), false);
    assert.equal(isTlsTarget('h:1'), false, 'a bare address stays plaintext');
    const named = dial('grpcs://10.0.0.5:8980', { tls: { serverName: 'cas.example.com' } });
    assert.equal(named.options['grpc.ssl_target_name_override'], 'cas.example.com');
    assert.equal(tlsFor('grpcs://h:1', { caFile: '/ca' })?.caFile, '/ca');
    assert.equal(tlsFor('grpc://h:1', { caFile: '/ca' }), undefined, 'settings shared by several channels skip plaintext ones');
  });

  it('reads the CA, certificate and key, refusing what it cannot use with INVALID_ARGUMENT naming the file', () => {
    const ca = makeCertAuthority(tmpDir());
    const client = ca.client('alice');
    const d = dial('grpcs://h:1', { tls: { caFile: ca.cert, certFile: client.cert, keyFile: client.key } });
    assert.equal(d.credentials._isSecure(), true);
    const refused = (tls: DialTls, pattern: RegExp) =>
      assert.throws(
        () => dial('grpcs://h:1', { tls }),
        (e: unknown) => codeOf(e) === Code.INVALID_ARGUMENT && pattern.test((e as Error).message),
        JSON.stringify(tls),
      );
    refused({ certFile: client.cert }, /needs both its certificate and its key .*only the certificate was given/);
    refused({ keyFile: client.key }, /needs both .*only the key was given/);
    const missing = path.join(tmpDir(), 'no-such-ca.pem');
    refused({ caFile: missing }, new RegExp(`cannot read the TLS CA file ${missing}: .*ENOENT`));
    refused({ certFile: missing, keyFile: client.key }, new RegExp(`cannot read the TLS certificate ${missing}`));
    // A key of another certificate: Node's "key values mismatch", with the files named.
    const other = ca.client('bob');
    refused({ certFile: client.cert, keyFile: other.key }, new RegExp(`cannot use the TLS files ${client.cert}, ${other.key}: .*mismatch`));
  });

  it('refuses other schemes and non-addresses with INVALID_ARGUMENT saying what was expected', () => {
    const cases: [string, RegExp][] = [
      ['http://h:80', /unsupported scheme http:\/\//],
      ['unix:///run/repr.sock', /unsupported scheme unix:\/\//],
      ['grpcs://h', /"grpcs:\/\/h" is not a server address/],
      ['h', /"h" is not a server address; expected grpc:\/\/host:port, grpcs:\/\/host:port \(TLS\) or host:port/],
      ['h:0', /not a server address/],
      ['dns:///h:1', /unsupported scheme dns:\/\//],
    ];
    for (const [target, pattern] of cases) {
      assert.throws(
        () => dial(target),
        (e: unknown) => codeOf(e) === Code.INVALID_ARGUMENT && pattern.test((e as Error).message),
        target,
      );
      assert.equal(normalizeTarget(target), undefined, target);
    }
  });

  it('refuses TLS settings for a plaintext target rather than ignoring them, saying to use grpcs://', () => {
    for (const target of ['h:1', 'grpc://h:1']) {
      assert.throws(
        () => dial(target, { tls: { caFile: '/etc/repr/ca.pem' } }),
        (e: unknown) => codeOf(e) === Code.INVALID_ARGUMENT && /grpc:\/\/h:1, which is plaintext; use grpcs:\/\/h:1/.test((e as Error).message),
        target,
      );
    }
  });

  describe('against a server that requires a token', () => {
    let server: ReprServer;
    before(async () => {
      server = await startInProcess({
        dataDir: tmpDir(),
        execution: { executors: 0 },
        auth: { type: 'token', tokens: [{ name: 'ci', token: TOKEN, roles: ['admin'] }] },
      });
    });
    after(() => server.stop());

    it('sends the token on every channel it dials', async () => {
      const withToken = new ReapiClient({ target: `grpc://${server.address}`, token: TOKEN });
      const without = new ReapiClient({ target: server.address });
      try {
        await withToken.getCapabilities();
        await assert.rejects(without.getCapabilities(), (e: unknown) => codeOf(e) === Code.UNAUTHENTICATED);
        assert.equal((await fetchStatus(server.address, 5000, { token: TOKEN })).workers.length, 0);
        await assert.rejects(fetchStatus(server.address, 5000), /UNAUTHENTICATED|credentials/i);
      } finally {
        withToken.close();
        without.close();
      }
    });

    it('sends it over TLS channels too', async () => {
      const ca = makeCertAuthority(tmpDir());
      const cert = ca.server();
      const secure = await startInProcess({
        dataDir: tmpDir(),
        execution: { executors: 0 },
        auth: { type: 'token', tokens: [{ name: 'ci', token: TOKEN, roles: ['admin'] }] },
        tls: { certFile: cert.cert, keyFile: cert.key },
      });
      const target = `grpcs://${secure.address}`;
      const withToken = new ReapiClient({ target, token: TOKEN, tls: { caFile: ca.cert } });
      const without = new ReapiClient({ target, tls: { caFile: ca.cert } });
      try {
        await withToken.getCapabilities();
        await assert.rejects(without.getCapabilities(), (e: unknown) => codeOf(e) === Code.UNAUTHENTICATED);
        assert.equal((await fetchStatus(target, 5000, { token: TOKEN, tls: { caFile: ca.cert } })).workers.length, 0);
      } finally {
        withToken.close();
        without.close();
        await secure.stop();
      }
    });
  });
});
