import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { Code, codeOf } from '../../../src/common/errors.js';
import { dial, normalizeTarget } from '../../../src/grpc/dial.js';
import { WINDOW_BYTES } from '../../../src/grpc/http2-windows.js';
import { fetchStatus } from '../../../src/client/status-client.js';
import { ReapiClient } from '../../../src/reapi/reapi-client.js';
import type { ReprServer } from '../../../src/server/server.js';
import { startInProcess } from '../../../support/servers.js';
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
    assert.equal(d.options.interceptors, undefined);
    assert.deepEqual(d.interceptors, []);
    const kept = dial('h:1', { token: TOKEN, keepaliveMs: 20_000, keepaliveTimeoutMs: 10_000 });
    assert.equal(kept.options['grpc.keepalive_time_ms'], 20_000);
    assert.equal(kept.options['grpc.keepalive_timeout_ms'], 10_000);
    assert.equal(kept.interceptors.length, 1);
    assert.equal(kept.options.interceptors, kept.interceptors);
  });

  it('refuses other schemes and non-addresses with INVALID_ARGUMENT saying what was expected', () => {
    const cases: [string, RegExp][] = [
      ['http://h:80', /unsupported scheme http:\/\//],
      ['unix:///run/repr.sock', /unsupported scheme unix:\/\//],
      ['grpcs://h:443', /TLS channels \(grpcs:\/\/\) are not supported yet/],
      ['h', /"h" is not a server address; expected grpc:\/\/host:port or host:port/],
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

  it('refuses TLS settings rather than dialling in plaintext', () => {
    assert.throws(
      () => dial('h:1', { tls: {} }),
      (e: unknown) => codeOf(e) === Code.UNIMPLEMENTED,
    );
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
        assert.equal((await fetchStatus(server.address, 5000, TOKEN)).workers.length, 0);
        await assert.rejects(fetchStatus(server.address, 5000), /UNAUTHENTICATED|credentials/i);
      } finally {
        withToken.close();
        without.close();
      }
    });
  });
});
