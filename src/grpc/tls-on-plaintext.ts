import type { Server } from '@grpc/grpc-js';
import type { Socket } from 'node:net';
import { type Clock, systemClock } from '../common/clock.js';
import type { Logger } from '../common/logger.js';

/** A TLS record carrying a handshake (the ClientHello) starts with this byte; HTTP/2's preface starts with 'P'. */
const TLS_HANDSHAKE = 0x16;

type ConnectionListener = (socket: Socket) => void;

interface Http2ServerLike {
  listeners(event: 'connection'): ConnectionListener[];
  removeAllListeners(event: 'connection'): unknown;
  on(event: 'connection', fn: ConnectionListener): unknown;
}

interface GrpcInternals {
  http2Servers?: Map<Http2ServerLike, unknown>;
}

export interface TlsOnPlaintextOptions {
  /** grpc://host:port of the server, for the line's advice. */
  url: string;
  log: Logger;
  /** At most one line per this many ms; the next says how many it stood for. Default one minute. */
  everyMs?: number;
  clock?: Clock;
}

/**
 * Logs a warning when a client opens a TLS handshake on a plaintext port.
 * Bazel dials a bare host:port with TLS, and then fails with exit code 37
 * and the cause only in its java.log; without this line the server says
 * nothing at all.
 *
 * Node's HTTP/2 server hands each socket to native code as soon as it is
 * accepted, so its bytes cannot be seen afterwards. Instead each connection
 * waits for its first bytes, which are looked at and put back before the
 * server's own handlers take the socket: Node's HTTP/2 session reads what a
 * socket already holds before it reads natively. Clients speak first in
 * HTTP/2 (the preface), so no connection waits for anything it would not
 * have waited for anyway.
 *
 * Call after binding a plaintext server. This reaches into grpc-js's map of
 * its HTTP/2 servers; returns false, doing nothing, if that is gone.
 */
export function watchForTlsOnPlaintext(server: Server, o: TlsOnPlaintextOptions): boolean {
  const servers = (server as unknown as GrpcInternals).http2Servers;
  if (!(servers instanceof Map) || servers.size === 0) return false;
  const report = rateLimited(o);
  for (const h2 of servers.keys()) {
    const handlers = h2.listeners('connection');
    if (handlers.length === 0) return false;
    h2.removeAllListeners('connection');
    h2.on('connection', (socket) => {
      // Until the server's handlers own the socket, its failures are ours to absorb.
      const drop = () => socket.destroy();
      socket.once('error', drop);
      socket.once('end', drop);
      socket.once('data', (first: Buffer) => {
        socket.pause();
        socket.unshift(first);
        socket.off('error', drop);
        socket.off('end', drop);
        if (first[0] === TLS_HANDSHAKE) report(`${socket.remoteAddress}:${socket.remotePort}`);
        for (const handle of handlers) handle.call(h2, socket);
      });
    });
  }
  return true;
}

function rateLimited(o: TlsOnPlaintextOptions): (from: string) => void {
  const clock = o.clock ?? systemClock;
  const everyMs = o.everyMs ?? 60_000;
  const hostPort = o.url.replace(/^grpcs?:\/\//, '');
  let last = Number.NEGATIVE_INFINITY;
  let unreported = 0;
  return (from) => {
    const now = clock.now();
    if (now - last < everyMs) {
      unreported++;
      return;
    }
    last = now;
    o.log.warn(
      { from, ...(unreported > 0 ? { moreSinceLastLine: unreported } : {}) },
      `a client started a TLS handshake on this plaintext port (from ${from}): it was given grpcs://, or a bare host:port that Bazel dials with TLS; ` +
        `give it grpc://${hostPort}, or start the server with --tls-cert and --tls-key`,
    );
    unreported = 0;
  };
}
