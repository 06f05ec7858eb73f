import { connect } from 'node:net';
import { settleProbe } from './socket-probe.js';

/** What every HTTP/2 connection starts with (RFC 9113 §3.4). */
const PREFACE = 'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n';
const STATUS_LINE = /^HTTP\/1\.[01] \d{3}[^\r\n]*/;

/**
 * Asks a plaintext server that broke grpc-js's connection with "Protocol
 * error" whether it is an HTTP/1 server: one sends a status line back to
 * the HTTP/2 preface (usually 400 or 505), where an HTTP/2 server sends
 * frames. Resolves that status line, or undefined when the answer is
 * anything else or does not come within `timeoutMs`.
 */
export function http1StatusLine(host: string, port: number, timeoutMs = 3000): Promise<string | undefined> {
  return new Promise((resolve) => {
    const socket = connect({ host, port });
    let received = '';
    const done = settleProbe(socket, timeoutMs, resolve);
    socket.on('connect', () => socket.write(PREFACE));
    socket.on('data', (d: Buffer) => {
      received += d.toString('latin1');
      // A status line is short; a few bytes that do not start one settle it.
      if (received.includes('\n') || received.length >= 64 || !'HTTP/1.'.startsWith(received.slice(0, 7))) {
        done(STATUS_LINE.exec(received)?.[0]);
      }
    });
    socket.on('error', () => done(undefined));
    socket.on('close', () => done(STATUS_LINE.exec(received)?.[0]));
  });
}
