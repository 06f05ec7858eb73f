import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { compileServerConfig } from '../../../src/config/config.js';
import { isLoopbackListen, ReprServer } from '../../../src/server/server.js';
import { captureLogger } from '../../../support/log-capture.js';
import { tmpDir } from '../../../support/tmp.js';

const TOKEN = 'start-token-0123456789abcdef';

/** Starts a cache-only server with this config and returns what it logged at warn and above. */
async function warnings(input: Record<string, unknown>): Promise<string[]> {
  const capture = captureLogger('warn');
  const server = await ReprServer.start(compileServerConfig({ dataDir: tmpDir(), execution: { enabled: false }, ...input }), capture.log);
  await server.stop();
  return capture.records().map((r) => String(r.msg));
}

describe('start-up warnings about exposure', () => {
  it('tells loopback addresses from others', () => {
    for (const a of ['127.0.0.1:8980', 'localhost:1', '[::1]:2', '127.1.2.3:0']) assert.ok(isLoopbackListen(a), a);
    for (const a of ['0.0.0.0:8980', '[::]:1', '10.0.0.1:2', 'farm.example:3']) assert.ok(!isLoopbackListen(a), a);
  });

  it('says nothing on loopback, as today', async () => {
    assert.deepEqual(await warnings({ listen: '127.0.0.1:0' }), []);
  });

  it('warns beyond loopback about plaintext and about anonymous access, one line each', async () => {
    const open = await warnings({ listen: '0.0.0.0:0' });
    assert.equal(open.filter((m) => /without TLS/.test(m)).length, 1);
    assert.equal(open.filter((m) => /with anonymous access/.test(m)).length, 1);
    const closed = await warnings({ listen: '0.0.0.0:0', auth: { tokens: [{ name: 'ci', token: TOKEN, roles: ['ci'] }] } });
    assert.equal(closed.filter((m) => /without TLS/.test(m)).length, 1);
    assert.equal(closed.filter((m) => /anonymous/.test(m)).length, 0);
  });

  it('refuses client-certificate principals on a server that asks for no client certificate', () => {
    for (const tls of [undefined, { certFile: '/c.pem', keyFile: '/k.pem' }]) {
      assert.throws(
        () => compileServerConfig({ dataDir: tmpDir(), auth: { mtls: {}, anonymous: false }, ...(tls ? { tls } : {}) }),
        /auth\.mtls needs tls\.clientCaFile/,
      );
    }
  });
});
