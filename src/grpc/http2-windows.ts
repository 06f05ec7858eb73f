import type { Server } from '@grpc/grpc-js';
import type { Http2Session } from 'node:http2';

/**
 * HTTP/2 flow-control windows for the server side of blob transfers.
 *
 * grpc-js has no server option for them (only the client honours
 * `grpc-node.flow_control_window`), and with the 64 KiB defaults a client
 * uploading over ByteStream waits for a WINDOW_UPDATE every 64 KiB. Measured
 * on loopback (FINDINGS.md, `npm run bench -- bytestream`): large windows
 * roughly double Write throughput. This reaches into two grpc-js internals —
 * the options passed to http2.createServer and its map of HTTP/2 servers — so
 * it checks that they exist and does nothing (slower, still correct) if a
 * grpc-js upgrade renames them.
 */
export const WINDOW_BYTES = 16 * 1024 * 1024;

interface GrpcInternals {
  commonServerOptions?: { settings?: Record<string, unknown> };
  http2Servers?: Map<{ on(event: 'session', fn: (s: Http2Session) => void): void }, unknown>;
}

/** Call after constructing the server and before binding: sets the per-stream window. */
export function enlargeStreamWindows(server: Server): boolean {
  const opts = (server as unknown as GrpcInternals).commonServerOptions;
  if (!opts) return false;
  opts.settings = { ...opts.settings, initialWindowSize: WINDOW_BYTES };
  return true;
}

/** Call after binding: sets the connection-level window of every new session. */
export function enlargeSessionWindows(server: Server): boolean {
  const servers = (server as unknown as GrpcInternals).http2Servers;
  if (!servers) return false;
  for (const h2 of servers.keys()) {
    h2.on('session', (session) => {
      try {
        session.setLocalWindowSize(WINDOW_BYTES);
      } catch {
        /* session already closing */
      }
    });
  }
  return true;
}
