import assert from 'node:assert/strict';
import { createServer } from 'node:http2';
import type { AddressInfo } from 'node:net';
import { after, describe, it } from 'node:test';
import { startServerProcess, type ServerProcess } from '../../support/servers.js';
import { runReprToEnd } from '../../support/spawn-server.js';
import { tmpDir } from '../../support/tmp.js';

/**
 * A worker pointed at something that is not a repr scheduler stops at once
 * with one line saying so and a non-zero exit, instead of "reconnecting"
 * forever to a server that can never take it.
 */
/** `repr worker` against `scheduler`, until it exits by itself. */
const worker = (scheduler: string) => runReprToEnd(['worker', '--scheduler', scheduler, '--executors', '1', '--data-dir', tmpDir('repr-w-')]);

describe('a worker pointed at something that is not a repr scheduler', () => {
  const servers: ServerProcess[] = [];
  // An HTTP/2 server that is not gRPC (a web server speaking h2c): grpc-js reads its 404 as UNIMPLEMENTED.
  const http = createServer((_req, res) => res.writeHead(404).end('not here'));
  after(async () => {
    for (const s of servers) await s.stop();
    http.close();
  });

  it('a cache-only repr server', async () => {
    const cache = await startServerProcess(['--data-dir', tmpDir('repr-data-'), '--cache-only']);
    servers.push(cache);
    const r = await worker(cache.url);
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, new RegExp(`^repr: ${cache.url} is not a repr scheduler: it does not serve the worker protocol`, 'm'));
    assert.doesNotMatch(r.stderr, /\n\s+at /, 'no stack trace');
  });

  it('an HTTP/2 server that is not gRPC', async () => {
    await new Promise<void>((resolve) => http.listen(0, '127.0.0.1', resolve));
    const url = `grpc://127.0.0.1:${(http.address() as AddressInfo).port}`;
    const r = await worker(url);
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, /is not a repr scheduler/);
  });
});
