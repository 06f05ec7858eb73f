import assert from 'node:assert/strict';
import { createServer as createHttp1Server } from 'node:http';
import { createServer } from 'node:http2';
import { createServer as createTcpServer } from 'node:net';
import type { AddressInfo } from 'node:net';
import { after, describe, it } from 'node:test';
import { startServerProcess, type ServerProcess } from '../../support/servers.js';
import { runReprToEnd, spawnRepr } from '../../support/spawn-server.js';
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

  it('an HTTP/1 server', async () => {
    // grpc-js says only "Protocol error" of it, which could pass; the worker asks the server itself.
    const web = createHttp1Server((_req, res) => res.writeHead(404).end('not here'));
    await new Promise<void>((resolve) => web.listen(0, '127.0.0.1', resolve));
    try {
      const url = `grpc://127.0.0.1:${(web.address() as AddressInfo).port}`;
      const r = await worker(url);
      assert.equal(r.code, 1, r.stderr);
      assert.match(
        r.stderr,
        new RegExp(
          `^repr: ${url} is not a repr scheduler: an HTTP/1 server answered "HTTP/1\\.1 \\d{3}[^"]*" \\(UNAVAILABLE: Protocol error\\); point --scheduler at a repr server with execution enabled\n$`,
        ),
      );
    } finally {
      web.close();
    }
  });
});

/** A loopback port nothing listens on (yet). */
async function freePort(): Promise<number> {
  const s = createTcpServer();
  await new Promise<void>((resolve) => s.listen(0, '127.0.0.1', resolve));
  const { port } = s.address() as AddressInfo;
  await new Promise((resolve) => s.close(resolve));
  return port;
}

interface RetryLine {
  msg: string;
  retryInMs: number;
}

describe('a worker whose scheduler is not there', () => {
  let scheduler: ServerProcess | undefined;
  let worker: { stop(signal?: NodeJS.Signals): Promise<unknown> } | undefined;
  // A failed assertion must not leave the worker retrying forever: the test file would never end.
  after(async () => {
    await worker?.stop('SIGKILL');
    await scheduler?.stop('SIGKILL');
  });

  it('retries with growing delays saying it cannot reach it, registers once it comes, and reconnects at once after losing it', async () => {
    const port = await freePort();
    const url = `grpc://127.0.0.1:${port}`;
    const started = spawnRepr(
      ['worker', '--scheduler', url, '--executors', '1', '--data-dir', tmpDir('repr-w-')],
      (rec) => rec.msg === 'registered with the scheduler',
      60_000,
    );
    // Start the scheduler once the worker has failed a few times.
    const lines = (text: string[]) =>
      text.flatMap((l) => {
        try {
          return [JSON.parse(l) as RetryLine];
        } catch {
          return [];
        }
      });
    let early: RetryLine[] = [];
    const retryLines = (all: RetryLine[]) => all.filter((l) => l.retryInMs !== undefined);
    const w = await new Promise<Awaited<typeof started>>((resolve, reject) => {
      started.then(resolve, reject);
      // spawnRepr keeps logs to itself until ready; the scheduler's start is what makes it ready.
      setTimeout(async () => {
        try {
          scheduler = await startServerProcess(['--listen', `127.0.0.1:${port}`, '--data-dir', tmpDir('repr-sched-'), '--executors', '0']);
        } catch (e) {
          reject(e);
        }
      }, 2500);
    });
    worker = w;
    early = retryLines(lines(w.logs));
    assert.ok(early.length >= 3, `a few attempts in 2.5 s: ${w.logs.join('')}`);
    for (const l of early) {
      assert.match(
        l.msg,
        // The connection failure in words, as every client command says it.
        new RegExp(`^cannot reach ${url}: connection refused: nothing listens at that address; retrying in \\d+\\.\\d s$`),
      );
    }
    const delays = early.map((l) => l.retryInMs);
    for (let i = 1; i < delays.length; i++) assert.ok(delays[i]! > delays[i - 1]!, `delays grow: ${delays}`);
    assert.ok(delays[0]! >= 200 && delays[0]! <= 300, `the first retry is soon: ${delays[0]}`);

    // Losing it after registering: said differently, and retried soon again (the delay starts over).
    const before = w.logs.length;
    await scheduler!.stop('SIGKILL');
    const deadline = Date.now() + 10_000;
    let lost: RetryLine | undefined;
    while (!lost && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 100));
      lost = retryLines(lines(w.logs.slice(before)))[0];
    }
    assert.ok(lost, `a line after the scheduler went away: ${w.logs.slice(before).join('')}`);
    assert.match(lost.msg, new RegExp(`^lost the scheduler at ${url} \\(.*\\); reconnecting in \\d+\\.\\d s$`));
    assert.ok(lost.retryInMs <= 300, `after a connection the delay starts over: ${lost.retryInMs}`);
    assert.equal(await w.stop('SIGTERM'), 0);
  });
});
