import assert from 'node:assert/strict';
import { connect } from 'node:tls';
import { after, before, describe, it } from 'node:test';
import { Server, ServerCredentials } from '@grpc/grpc-js';
import { ManualClock } from '../../../src/common/clock.js';
import { SHA256 } from '../../../src/common/digest.js';
import { ReapiClient } from '../../../src/reapi/reapi-client.js';
import { compileServerConfig } from '../../../src/config/config.js';
import { ReprServer } from '../../../src/server/server.js';
import { watchForTlsOnPlaintext } from '../../../src/grpc/tls-on-plaintext.js';
import { captureLogger } from '../../../support/log-capture.js';
import { tmpDir } from '../../../support/tmp.js';

/** Opens a TLS connection to `port` as a client given grpcs:// would, and resolves with the error it ends with. */
function tlsHello(port: number): Promise<string> {
  return new Promise((resolve) => {
    const socket = connect({ host: '127.0.0.1', port, ALPNProtocols: ['h2'], rejectUnauthorized: false });
    socket.on('secureConnect', () => resolve('handshake completed'));
    socket.on('error', (e) => resolve(e.message));
    socket.on('close', () => resolve('closed'));
  });
}

const until = async (what: string, ok: () => boolean) => {
  for (let i = 0; !ok(); i++) {
    assert.ok(i < 100, `timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
};

const tlsLines = (records: Record<string, unknown>[]) => records.filter((r) => String(r.msg).startsWith('a client started a TLS handshake'));

describe('a TLS handshake on the plaintext port', () => {
  const capture = captureLogger('info');
  let server: ReprServer;
  before(async () => {
    server = await ReprServer.start(compileServerConfig({ listen: '127.0.0.1:0', dataDir: tmpDir(), execution: { enabled: false } }), capture.log);
  });
  after(() => server.stop());

  it('is logged with where it came from and what to use instead, while gRPC calls go on as before', async () => {
    assert.deepEqual(
      capture.records().filter((r) => /cannot notice TLS/.test(String(r.msg))),
      [],
      'the hook is in place',
    );
    assert.match(await tlsHello(server.port), /wrong version number|packet length|closed|ECONNRESET/);
    await until('the warning', () => tlsLines(capture.records()).length === 1);
    const [line] = tlsLines(capture.records());
    assert.equal(line!.level, 40);
    assert.match(String(line!.from), /^127\.0\.0\.1:\d+$/);
    assert.equal(
      line!.msg,
      `a client started a TLS handshake on this plaintext port (from ${line!.from}): it was given grpcs://, or a bare host:port that Bazel dials with TLS; give it grpc://${server.address}, or start the server with --tls-cert and --tls-key`,
    );

    // Plaintext gRPC, on new connections after the hook, still works.
    for (let i = 0; i < 3; i++) {
      const client = new ReapiClient({ target: server.address });
      try {
        const missing = { fn: SHA256, hash: 'a'.repeat(64), sizeBytes: 3 };
        assert.deepEqual(
          (await client.findMissing([missing])).map((d) => d.hash),
          [missing.hash],
        );
      } finally {
        client.close();
      }
    }
    assert.equal(tlsLines(capture.records()).length, 1, 'gRPC clients are not taken for TLS');
  });
});

describe('the TLS handshake warning', () => {
  it('comes at most once a minute, the next one counting those it stood for', async () => {
    const grpc = new Server();
    const port = await new Promise<number>((resolve, reject) =>
      grpc.bindAsync('127.0.0.1:0', ServerCredentials.createInsecure(), (e, p) => (e ? reject(e) : resolve(p))),
    );
    const clock = new ManualClock(1_000_000);
    const capture = captureLogger('info');
    try {
      assert.ok(watchForTlsOnPlaintext(grpc, { url: `grpc://127.0.0.1:${port}`, log: capture.log, clock }));
      const seen = async (n: number) => {
        await tlsHello(port);
        await new Promise((r) => setTimeout(r, 50));
        assert.equal(tlsLines(capture.records()).length, n);
      };
      await seen(1);
      await seen(1);
      await seen(1);
      clock.advance(60_000);
      await seen(2);
      assert.equal(tlsLines(capture.records())[1]!.moreSinceLastLine, 2);
    } finally {
      grpc.forceShutdown();
    }
  });

  it('is not set up on a server grpc-js has not bound, and says so', () => {
    assert.equal(watchForTlsOnPlaintext(new Server(), { url: 'grpc://127.0.0.1:1', log: captureLogger().log }), false);
  });
});
