import { readFileSync } from 'node:fs';
import { type ChannelCredentials, type ClientOptions, credentials, type Interceptor } from '@grpc/grpc-js';
import { invalidArgument } from '../common/errors.js';
import { bearerInterceptor } from './auth.js';
import { connectFailureInterceptor, type DialledEndpoint } from './connect-failure.js';
import { WINDOW_BYTES } from './http2-windows.js';

/**
 * How a grpcs:// channel checks the server and shows itself. Files are PEM
 * and read when dialling, so a rotated client certificate takes effect on
 * the next dial (a worker's next start, the next `repr run`).
 */
export interface DialTls {
  /** CA certificates the server's must chain to; default Node's bundled roots (plus NODE_EXTRA_CA_CERTS). */
  caFile?: string;
  /** This client's certificate, for servers that require one (mTLS); needs keyFile. */
  certFile?: string;
  keyFile?: string;
  /** The name the server's certificate must carry when it is not the host dialled (also sent as SNI). */
  serverName?: string;
}

export interface DialOptions {
  /** Sent as `authorization: Bearer <token>` on every call. */
  token?: string;
  /** Run after the bearer interceptor, on every call. */
  interceptors?: readonly Interceptor[];
  /**
   * Pings the server this often while calls are open, so that one that
   * vanished without closing the connection is noticed in seconds. Off by
   * default: servers that enforce a ping policy (gRPC-Go's default allows one
   * every 5 minutes) close connections that ping more often.
   */
  keepaliveMs?: number;
  /** How long a ping may go unanswered before the connection counts as dead (grpc-js default: 20 s). */
  keepaliveTimeoutMs?: number;
  /** Only with grpcs:// targets, which use TLS with or without it. */
  tls?: DialTls;
}

export interface Dialled {
  /** The target as `grpc://host:port` or `grpcs://host:port`. */
  target: string;
  /** `host:port`, as grpc-js client constructors take it. */
  address: string;
  credentials: ChannelCredentials;
  /**
   * Channel options and interceptors: a client constructor's third argument.
   * grpc-js deletes `interceptors` from the object it is given, so every
   * client constructed from it needs its own copy.
   */
  options: ClientOptions;
  /** The interceptors alone, for stubs that share another stub's channel (`channelOverride`). */
  interceptors: Interceptor[];
}

const ADDRESS_FORM = 'expected grpc://host:port, grpcs://host:port (TLS) or host:port';
const HOST = /^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?)$/;
const SCHEME = /^(grpcs?):\/\//i;

/**
 * `grpc://host:port`, `grpcs://host:port` or `host:port` written the one way
 * the rest of repr compares and dials them (a bare address is plaintext, as
 * it always was here; Bazel reads it as TLS, so say the scheme to Bazel), or
 * undefined if it is none of them.
 */
export function normalizeTarget(target: string): string | undefined {
  const trimmed = target.trim();
  const scheme = SCHEME.exec(trimmed)?.[1]?.toLowerCase() ?? 'grpc';
  const rest = trimmed.replace(SCHEME, '');
  const i = rest.lastIndexOf(':');
  if (i <= 0) return undefined;
  const host = rest.slice(0, i);
  const port = rest.slice(i + 1);
  if (!HOST.test(host) || !/^\d{1,5}$/.test(port) || Number(port) < 1 || Number(port) > 65535) return undefined;
  return `${scheme}://${host}:${Number(port)}`;
}

/** Like normalizeTarget, but throws INVALID_ARGUMENT saying what is wrong. */
export function parseTarget(target: string): string {
  const t = normalizeTarget(target);
  if (t !== undefined) return t;
  const scheme = /^([A-Za-z][A-Za-z0-9+.-]*):\/\//.exec(target.trim())?.[1];
  if (scheme !== undefined && !SCHEME.test(`${scheme}://`)) throw invalidArgument(`"${target}": unsupported scheme ${scheme}://; ${ADDRESS_FORM}`);
  throw invalidArgument(`"${target}" is not a server address; ${ADDRESS_FORM}`);
}

/** Whether `target` (any form parseTarget takes) is dialled with TLS. */
export function isTlsTarget(target: string): boolean {
  return normalizeTarget(target)?.startsWith('grpcs://') ?? false;
}

/**
 * For settings shared by several channels of one command (a worker's
 * scheduler and CAS, `repr run`'s servers): what the channel to `target`
 * takes. grpcs:// ones take them, plaintext ones none.
 */
export function tlsFor(target: string, tls: DialTls | undefined): DialTls | undefined {
  return tls && isTlsTarget(target) ? tls : undefined;
}

function readPem(file: string, what: string): Buffer {
  try {
    return readFileSync(file);
  } catch (e) {
    throw invalidArgument(`cannot read the TLS ${what} ${file}: ${(e as Error).message}`);
  }
}

/** The files of `tls`, read and checked, as grpc-js and a probe of the server take them. */
function loadClientTls(tls: DialTls): NonNullable<DialledEndpoint['tls']> {
  if ((tls.certFile === undefined) !== (tls.keyFile === undefined)) {
    throw invalidArgument(
      `a client certificate needs both its certificate and its key (--tls-cert and --tls-key, tls.certFile and tls.keyFile); only the ${tls.certFile ? 'certificate' : 'key'} was given`,
    );
  }
  return {
    ...(tls.caFile ? { ca: readPem(tls.caFile, 'CA file') } : {}),
    ...(tls.certFile ? { cert: readPem(tls.certFile, 'certificate') } : {}),
    ...(tls.keyFile ? { key: readPem(tls.keyFile, 'key') } : {}),
    ...(tls.serverName ? { serverName: tls.serverName } : {}),
  };
}

function tlsCredentials(tls: DialTls, pem: NonNullable<DialledEndpoint['tls']>): ChannelCredentials {
  try {
    return credentials.createSsl(pem.ca ?? null, pem.key ?? null, pem.cert ?? null);
  } catch (e) {
    // Node's message ("no start line", "key values mismatch") does not say which file.
    const files = [tls.caFile, tls.certFile, tls.keyFile].filter((f) => f !== undefined).join(', ');
    throw invalidArgument(`cannot use the TLS files ${files}: ${(e as Error).message}`);
  }
}

/**
 * Everything a grpc-js client constructor needs to reach `target`. Every
 * client of repr dials through here, so that addresses mean the same thing,
 * every channel gets the same windows and limits, and a connection that
 * fails for a TLS reason says so in one line (see connect-failure.ts).
 */
export function dial(target: string, options: DialOptions = {}): Dialled {
  const normalized = parseTarget(target);
  const secure = normalized.startsWith('grpcs://');
  const address = normalized.slice(normalized.indexOf('://') + 3);
  // Plaintext is never what someone who gave certificates meant.
  if (options.tls && !secure) throw invalidArgument(`TLS settings were given for ${normalized}, which is plaintext; use grpcs://${address}`);
  const pem = secure ? loadClientTls(options.tls ?? {}) : undefined;
  const channelCredentials = pem ? tlsCredentials(options.tls ?? {}, pem) : credentials.createInsecure();
  const i = address.lastIndexOf(':');
  const endpoint: DialledEndpoint = {
    target: normalized,
    host: address.slice(0, i).replace(/^\[(.*)\]$/, '$1'),
    port: Number(address.slice(i + 1)),
    ...(pem ? { tls: pem } : {}),
  };
  const interceptors = [
    // Outermost: statuses travel inward-out, so the caller gets the rewritten one.
    connectFailureInterceptor(endpoint),
    ...(options.token ? [bearerInterceptor(options.token)] : []),
    ...(options.interceptors ?? []),
  ];
  return {
    target: normalized,
    address,
    credentials: channelCredentials,
    options: {
      // The server bounds what it sends (batch limits); a client-side cap
      // would only turn a large blob or a long status into an error.
      'grpc.max_receive_message_length': -1,
      'grpc.max_send_message_length': -1,
      // With the 64 KiB default, blob downloads stall on WINDOW_UPDATEs.
      'grpc-node.flow_control_window': WINDOW_BYTES,
      ...(options.tls?.serverName ? { 'grpc.ssl_target_name_override': options.tls.serverName } : {}),
      ...(options.keepaliveMs !== undefined ? { 'grpc.keepalive_time_ms': options.keepaliveMs } : {}),
      ...(options.keepaliveTimeoutMs !== undefined ? { 'grpc.keepalive_timeout_ms': options.keepaliveTimeoutMs } : {}),
      interceptors,
    },
    interceptors,
  };
}
