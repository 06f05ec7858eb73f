import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import type { SecureContextOptions } from 'node:tls';
import { collectDefaultMetrics, type Registry } from 'prom-client';
import { internal, invalidArgument } from '../common/errors.js';
import type { Logger } from '../common/logger.js';

/** The certificate of an HTTPS endpoint, and how to hear of a new one. */
export interface MetricsTls {
  secureContextOptions(): SecureContextOptions;
  /** Calls `listener` whenever the certificate changes; returns how to stop. */
  onChange(listener: () => void): () => void;
  /** Require a client certificate that chains to `secureContextOptions().ca`. */
  requireClientCert: boolean;
}

export interface MetricsServerOptions {
  /** Also export the process metrics of prom-client (CPU, memory, event-loop lag, GC). */
  defaultMetrics?: boolean;
  /** Serve HTTPS with this certificate instead of HTTP. */
  tls?: MetricsTls;
  /** What /readyz answers: the conditions still unmet (none: ready), or draining. */
  readiness?: () => { ready: boolean; waitingFor: string[] };
}

export interface MetricsServer {
  /** host:port, with the real port if 0 was asked for. */
  address: string;
  port: number;
  close(): Promise<void>;
}

/** Splits "host:port" / "[::1]:port"; the host is what node:http listens on (no brackets). */
function parseListen(listen: string): { host: string; port: number } {
  const i = listen.lastIndexOf(':');
  const host = listen.slice(0, i).replace(/^\[(.*)\]$/, '$1');
  const portText = listen.slice(i + 1);
  const port = Number(portText);
  if (i <= 0 || !/^\d+$/.test(portText) || port > 65535 || host === '') {
    throw invalidArgument(`metrics listen address "${listen}" is not host:port (e.g. 127.0.0.1:9090; port 0 picks a free one)`);
  }
  return { host, port };
}

/**
 * An HTTP(S) endpoint for Prometheus to scrape, apart from the gRPC port:
 * scrapers speak HTTP/1.1, and it keeps metrics reachable while gRPC is busy
 * or refusing calls for lack of credentials. Client certificates are asked
 * for only when `tls.requireClientCert` says so: most scrapers and health
 * checkers present none.
 */
export async function startMetricsServer(listen: string, registry: Registry, log: Logger, options: MetricsServerOptions = {}): Promise<MetricsServer> {
  const { host, port } = parseListen(listen);
  if (options.defaultMetrics) collectDefaultMetrics({ register: registry });

  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const route = new URL(req.url ?? '/', 'http://metrics').pathname;
    if (route !== '/metrics' && route !== '/healthz' && route !== '/readyz') {
      res.writeHead(404, { 'content-type': 'text/plain; charset=utf-8' }).end('not found; try /metrics, /healthz or /readyz\n');
      return;
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET, HEAD', 'content-type': 'text/plain; charset=utf-8' }).end('method not allowed\n');
      return;
    }
    // Liveness: the process answers. A server still indexing its store is alive and must not be restarted for it.
    if (route === '/healthz') {
      res.writeHead(200, { 'content-type': 'text/plain; charset=utf-8' }).end('ok');
      return;
    }
    // Readiness, as the gRPC health service says it, for probes and balancers that speak only HTTP.
    if (route === '/readyz') {
      const r = options.readiness?.() ?? { ready: true, waitingFor: [] };
      const body = r.ready ? 'ready' : r.waitingFor.length > 0 ? `not ready: waiting for ${r.waitingFor.join(', ')}` : 'not ready: stopping';
      res.writeHead(r.ready ? 200 : 503, { 'content-type': 'text/plain; charset=utf-8' }).end(body);
      return;
    }
    try {
      const body = await registry.metrics();
      res.writeHead(200, { 'content-type': registry.contentType }).end(req.method === 'HEAD' ? undefined : body);
    } catch (err) {
      log.warn({ err }, 'cannot collect metrics');
      res.writeHead(500, { 'content-type': 'text/plain; charset=utf-8' }).end('cannot collect metrics\n');
    }
  };

  const onRequest = (req: IncomingMessage, res: ServerResponse) => void handle(req, res);
  const tls = options.tls;
  const require = tls?.requireClientCert ?? false;
  const server = tls
    ? createHttpsServer({ ...tls.secureContextOptions(), requestCert: require, rejectUnauthorized: require }, onRequest)
    : createServer(onRequest);
  // New connections get the new certificate; open ones keep theirs.
  const stopWatching = tls?.onChange(() => (server as ReturnType<typeof createHttpsServer>).setSecureContext(tls.secureContextOptions()));
  await new Promise<void>((resolve, reject) => {
    server.once('error', (err) => reject(internal(`cannot listen for metrics on ${listen}: ${err.message}`, err)));
    server.listen(port, host, () => resolve());
  });
  const bound = (server.address() as AddressInfo).port;
  const address = `${host.includes(':') ? `[${host}]` : host}:${bound}`;
  log.info({ address, tls: tls !== undefined }, 'metrics endpoint listening');
  return {
    address,
    port: bound,
    close: () =>
      new Promise<void>((resolve) => {
        stopWatching?.();
        server.close(() => resolve());
        // Scrapers keep connections alive; without this close() waits for them to time out.
        server.closeAllConnections();
      }),
  };
}
