import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { BazelWorkspace, bazelTlsStartupArgs, hasBazel } from '../../support/bazel.js';
import { startServerProcess, type ServerProcess } from '../../support/servers.js';
import { tmpDir } from '../../support/tmp.js';

/**
 * Bazel reads `--remote_cache=HOST:PORT` without a scheme as TLS. Against a
 * plaintext repr server it fails ("not an SSL/TLS record", exit 34); the
 * server's log says what happened and what to write instead.
 */
describe('Bazel given a plaintext server as host:port', () => {
  let server: ServerProcess | undefined;
  let ws: BazelWorkspace | undefined;
  after(async () => {
    await ws?.shutdown();
    await server?.stop();
  });

  it('fails, and the server logs a TLS handshake on its plaintext port with the grpc:// address to use', async () => {
    assert.ok(hasBazel(), 'bazel is not installed: apt-get install -y bazel-bootstrap (see README)');
    server = await startServerProcess(['--data-dir', tmpDir('repr-data-'), '--cache-only']);
    // As Bazel is used with TLS servers: otherwise it fails before it connects (see bazelTlsStartupArgs).
    ws = new BazelWorkspace(undefined, bazelTlsStartupArgs());
    const r = await ws.run(['build', '//gen/...', `--remote_cache=${server.address}`, '--remote_retries=0']);
    assert.notEqual(r.code, 0, 'Bazel cannot use the cache');
    const line = server.logs
      .flatMap((l) => {
        try {
          return [JSON.parse(l) as { level: number; msg: string; from: string }];
        } catch {
          return [];
        }
      })
      .find((rec) => rec.msg.startsWith('a client started a TLS handshake on this plaintext port'));
    assert.ok(line, `the server said nothing about it:\n${server.logs.join('')}`);
    assert.equal(line.level, 40);
    assert.match(line.from, /^127\.0\.0\.1:\d+$/);
    assert.ok(line.msg.includes(`give it grpc://${server.address}`), line.msg);
  });
});
