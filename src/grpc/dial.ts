import { type ChannelCredentials, type ClientOptions, credentials, type Interceptor } from '@grpc/grpc-js';
import { invalidArgument, unimplemented } from '../common/errors.js';
import { bearerInterceptor } from './auth.js';
import { WINDOW_BYTES } from './http2-windows.js';

/**
 * How a channel authenticates the server and itself. Reserved: channels are
 * plaintext until TLS is implemented, and `dial` refuses a `tls` it cannot
 * honour rather than falling back to plaintext behind the caller's back.
 */
export type DialTls = Record<string, never>;

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
  tls?: DialTls;
}

export interface Dialled {
  /** The target as `grpc://host:port`. */
  target: string;
  /** `host:port`, as grpc-js client constructors take it. */
  address: string;
  credentials: ChannelCredentials;
  /** Channel options and interceptors: a client constructor's third argument. */
  options: ClientOptions;
  /** The interceptors alone, for stubs that share another stub's channel (`channelOverride`). */
  interceptors: Interceptor[];
}

const ADDRESS_FORM = 'expected grpc://host:port or host:port';
const HOST = /^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?)$/;

/** `grpc://host:port` or `host:port` as `grpc://host:port`, or undefined if it is neither. */
export function normalizeTarget(target: string): string | undefined {
  const rest = target.trim().replace(/^grpc:\/\//, '');
  const i = rest.lastIndexOf(':');
  if (i <= 0) return undefined;
  const host = rest.slice(0, i);
  const port = rest.slice(i + 1);
  if (!HOST.test(host) || !/^\d{1,5}$/.test(port) || Number(port) < 1 || Number(port) > 65535) return undefined;
  return `grpc://${host}:${Number(port)}`;
}

/** Like normalizeTarget, but throws INVALID_ARGUMENT saying what is wrong. */
export function parseTarget(target: string): string {
  const t = normalizeTarget(target);
  if (t !== undefined) return t;
  const scheme = /^([A-Za-z][A-Za-z0-9+.-]*):\/\//.exec(target.trim())?.[1];
  if (scheme?.toLowerCase() === 'grpcs') throw invalidArgument(`"${target}": TLS channels (grpcs://) are not supported yet; ${ADDRESS_FORM}`);
  if (scheme !== undefined && scheme.toLowerCase() !== 'grpc') throw invalidArgument(`"${target}": unsupported scheme ${scheme}://; ${ADDRESS_FORM}`);
  throw invalidArgument(`"${target}" is not a server address; ${ADDRESS_FORM}`);
}

/**
 * Everything a grpc-js client constructor needs to reach `target`. Every
 * client of repr dials through here, so that addresses mean the same thing
 * and every channel gets the same windows and limits.
 */
export function dial(target: string, options: DialOptions = {}): Dialled {
  const normalized = parseTarget(target);
  if (options.tls) throw unimplemented(`cannot dial ${normalized} with TLS: not supported yet`);
  const interceptors = [...(options.token ? [bearerInterceptor(options.token)] : []), ...(options.interceptors ?? [])];
  return {
    target: normalized,
    address: normalized.slice('grpc://'.length),
    credentials: credentials.createInsecure(),
    options: {
      // The server bounds what it sends (batch limits); a client-side cap
      // would only turn a large blob or a long status into an error.
      'grpc.max_receive_message_length': -1,
      'grpc.max_send_message_length': -1,
      // With the 64 KiB default, blob downloads stall on WINDOW_UPDATEs.
      'grpc-node.flow_control_window': WINDOW_BYTES,
      ...(options.keepaliveMs !== undefined ? { 'grpc.keepalive_time_ms': options.keepaliveMs } : {}),
      ...(options.keepaliveTimeoutMs !== undefined ? { 'grpc.keepalive_timeout_ms': options.keepaliveTimeoutMs } : {}),
      ...(interceptors.length > 0 ? { interceptors } : {}),
    },
    interceptors,
  };
}
