import { isIP } from 'node:net';
import { checkServerIdentity, connect as tlsConnect } from 'node:tls';
import { InterceptingCall, type Interceptor, type ServiceError, type StatusObject } from '@grpc/grpc-js';
import { systemClock } from '../common/clock.js';
import { Code } from '../common/errors.js';
import { settleProbe } from './socket-probe.js';

/** A channel as dialled, with what a second look at the server needs. */
export interface DialledEndpoint {
  /** grpc://host:port or grpcs://host:port */
  target: string;
  /** The host as a socket takes it: no brackets around an IPv6 address. */
  host: string;
  port: number;
  /** For grpcs:// channels: the PEM bytes and names the channel uses. */
  tls?: { ca?: Buffer; cert?: Buffer; key?: Buffer; serverName?: string };
}

/** How every rewritten message starts; `isConnectFailure` recognises it. */
const CANNOT_REACH = 'cannot reach ';

// What OpenSSL and Node say, grouped by what the user has to do about it.
const CLIENT_CERT_REQUIRED = /certificate required|alert number 116|peer did not return a certificate/i;
const CLIENT_CERT_REFUSED =
  /alert (?:unknown ca|bad certificate|certificate unknown|certificate expired|certificate revoked|unsupported certificate|access denied)/i;
const NOT_TLS = /wrong version number|packet length too long|http request|unknown protocol|record layer failure|record_layer_failure/i;
const WRONG_NAME = /ERR_TLS_CERT_ALTNAME_INVALID|does not match certificate's altnames|Hostname\/IP does not match/i;
const EXPIRED = /certificate has expired|CERT_HAS_EXPIRED/i;
const NOT_YET_VALID = /certificate is not yet valid|CERT_NOT_YET_VALID/i;
const UNTRUSTED =
  /self[- ]signed certificate|unable to verify the first certificate|unable to get (?:local )?issuer certificate|certificate signature failure|unable to decode issuer|invalid CA certificate|certificate chain too long|unsuitable certificate purpose|certificate not trusted/i;
/**
 * Last errors that only say the peer hung up: a plaintext client at a TLS
 * port, or a TLS server that dropped a client certificate it did not trust
 * (Node's TLS server closes such connections without an alert).
 */
const HUNG_UP = /^(?:Failed to connect|Socket closed|socket hang up|read ECONNRESET|Error: read ECONNRESET|Error: Socket closed)/i;

/** What grpc-js says instead of "No connection established" when DNS has no answer. */
const NAME_UNRESOLVED = /^Name resolution failed for target/;

/**
 * Failures to reach any server at all, whatever the channel's security, as
 * the socket reported them; grpc-js's own text ("No connection established.
 * Last error: Error: connect ECONNREFUSED …. Resolution note: ") buries them.
 */
const UNREACHABLE: readonly (readonly [RegExp, string])[] = [
  [/ECONNREFUSED/, 'connection refused: nothing listens at that address'],
  [/EHOSTUNREACH|ENETUNREACH|EADDRNOTAVAIL/, 'no route to that host'],
  [/ETIMEDOUT/, 'the connection timed out'],
  [NAME_UNRESOLVED, 'the host name does not resolve'],
];

/** The "Last error" of grpc-js's "No connection established. Last error: …. Resolution note: …". */
function lastError(details: string): string | undefined {
  const m = /^No connection established\. Last error: ([\s\S]*?)(?:\. Resolution note:[\s\S]*)?$/.exec(details);
  return m?.[1]?.trim();
}

/** The reason alone: OpenSSL's "…:error:0A00010B:SSL routines:ssl3_get_record:wrong version number:file:line:" becomes its fifth field. */
function reasonOf(text: string): string {
  const ssl = /error:[0-9A-Fa-f]+:[^:]*:[^:]*:([^:]+):/.exec(text);
  if (ssl) return ssl[1]!.trim();
  return text
    .replace(/^Error(?: \[[A-Z0-9_]+\])?: /, '')
    .replace(/\s*\(\d{4}-\d\d-\d\dT[^)]*\)\s*$/, '')
    .replace(/\.$/, '')
    .trim();
}

const hostPort = (e: DialledEndpoint) => e.target.replace(/^grpcs?:\/\//, '');

/** What a failure's text says, as the one line the user reads, or undefined when it says nothing about TLS. */
function fromText(text: string, e: DialledEndpoint): string | undefined {
  const reason = reasonOf(text);
  const why = (what: string) => `${CANNOT_REACH}${e.target}: ${what}`;
  if (!e.tls) return undefined;
  if (CLIENT_CERT_REQUIRED.test(text)) return why('the server requires a client certificate; pass --tls-cert and --tls-key');
  if (CLIENT_CERT_REFUSED.test(text))
    return why(`the server refused this client's certificate (${reason}); pass --tls-cert and --tls-key with a certificate from a CA the server trusts`);
  if (NOT_TLS.test(text)) return why(`the server does not speak TLS (${reason}); use grpc://${hostPort(e)}`);
  if (WRONG_NAME.test(text)) return why(`the server's certificate is not issued for the name dialled (${reason}); dial a name the certificate lists`);
  if (EXPIRED.test(text)) return why(`the server's certificate has expired (${reason}); the server needs a new one`);
  if (NOT_YET_VALID.test(text)) return why(`the server's certificate is not valid yet (${reason}); check both machines' clocks`);
  if (UNTRUSTED.test(text)) return why(`the server's certificate is not trusted (${reason}); pass --tls-ca with the CA that signed it`);
  return undefined;
}

/** How long a probe may take: a server that lets a handshake hang this long says nothing useful anyway. */
const PROBE_MS = 3000;

/**
 * Opens one TLS connection to the server the way the channel would, and
 * reports what grpc-js could not: whether a plaintext channel reached a TLS
 * server, or why a TLS server hung up. Resolves undefined when it learns
 * nothing.
 */
function probe(e: DialledEndpoint): Promise<string | undefined> {
  return new Promise((resolve) => {
    const t = e.tls;
    const name = t?.serverName ?? e.host;
    const socket = tlsConnect({
      host: e.host,
      port: e.port,
      ALPNProtocols: ['h2'],
      // Node warns about an IP address as SNI; the name check below does not need it.
      ...(isIP(name) ? {} : { servername: name }),
      ...(t
        ? {
            ca: t.ca,
            cert: t.cert,
            key: t.key,
            checkServerIdentity: (_host: string, cert: Parameters<typeof checkServerIdentity>[1]) => checkServerIdentity(name, cert),
          }
        : { rejectUnauthorized: false }),
    });
    let handshaken = false;
    const done = settleProbe(socket, PROBE_MS, resolve);
    // With TLS 1.3 the server judges a client certificate after the
    // handshake: its HTTP/2 settings mean it took it, a hang-up without an
    // alert means it did not (Node's TLS server sends none for a certificate
    // that fails verification).
    const hungUp = () => done(handshaken && t?.cert ? refused(e) : undefined);
    socket.on('secureConnect', () => {
      handshaken = true;
      if (!t) done(`${CANNOT_REACH}${e.target}: the server speaks TLS; use grpcs://${hostPort(e)}`);
    });
    socket.on('data', () => done(undefined));
    socket.on('error', (err) => {
      const why = fromText(`${(err as NodeJS.ErrnoException).code ?? ''} ${err.message}`, e);
      if (why) done(why);
      else hungUp();
    });
    socket.on('end', hungUp);
    socket.on('close', hungUp);
  });
}

const refused = (e: DialledEndpoint) =>
  `${CANNOT_REACH}${e.target}: the server refused this client's certificate (it closed the connection after the handshake); pass --tls-cert and --tls-key with a certificate from a CA the server trusts`;

/**
 * Rewrites grpc-js's report of a failed connection ("No connection
 * established. Last error: Error: self-signed certificate …") into one line
 * that names the cause and what to pass: an untrusted, misnamed or expired
 * server certificate, a client certificate the server requires or refused,
 * TLS spoken to a plaintext server or plaintext to a TLS one. Where grpc-js
 * only says the peer hung up, it asks the server once more itself. A server
 * that cannot be reached at all (refused, no route, a name that does not
 * resolve) gets its line too; anything else resolves undefined.
 */
export function explainConnectFailure(details: string, endpoint: DialledEndpoint): Promise<string | undefined> {
  return explain(details, endpoint, () => probe(endpoint));
}

async function explain(details: string, endpoint: DialledEndpoint, probeOnce: () => Promise<string | undefined>): Promise<string | undefined> {
  const last = lastError(details) ?? (NAME_UNRESOLVED.test(details) ? details : undefined);
  if (last === undefined) return undefined;
  const why = fromText(last, endpoint) ?? (HUNG_UP.test(last) ? await probeOnce() : undefined);
  if (why) return why;
  const unreachable = UNREACHABLE.find(([re]) => re.test(last));
  return unreachable ? `${CANNOT_REACH}${endpoint.target}: ${unreachable[1]}` : undefined;
}

/** Whether a failure `explainConnectFailure` rewrote found no server at all (as opposed to one it could not talk to): the address is what to fix. */
export function isUnreachable(err: unknown): boolean {
  const details = (err as Partial<ServiceError> | undefined)?.details;
  return isConnectFailure(err) && UNREACHABLE.some(([, why]) => details!.endsWith(`: ${why}`));
}

/** A failed call's details without grpc-js's wrapping: "No connection established. Last error: Error: connect ECONNREFUSED …" says "connect ECONNREFUSED …". */
export function failureReason(details: string): string {
  const last = lastError(details);
  return last === undefined ? details : reasonOf(last);
}

/** Whether an error is a connection failure `explainConnectFailure` rewrote; its `details` are then the whole story. */
export function isConnectFailure(err: unknown): boolean {
  const e = err as Partial<ServiceError> | undefined;
  return e?.code === Code.UNAVAILABLE && typeof e.details === 'string' && e.details.startsWith(CANNOT_REACH);
}

/** A probe's answer is reused this long: calls failing together (a batch, a retry loop) share one. */
const PROBE_REUSE_MS = 2000;

/**
 * Applies `explainConnectFailure` to every call of a channel, so that each
 * client (REAPI, execution, `repr run`, status, the worker's stream) reports
 * the same clear line without handling it itself.
 */
export function connectFailureInterceptor(endpoint: DialledEndpoint): Interceptor {
  let recent: { at: number; why: Promise<string | undefined> } | undefined;
  const probeOnce = () => {
    const now = systemClock.now();
    if (!recent || now - recent.at > PROBE_REUSE_MS) recent = { at: now, why: probe(endpoint) };
    return recent.why;
  };
  return (options, nextCall) =>
    new InterceptingCall(nextCall(options), {
      // The listener given to next() covers only the status; grpc-js passes the rest through to the caller's.
      start(metadata, _listener, next) {
        next(metadata, {
          onReceiveStatus(status: StatusObject, forward: (s: StatusObject) => void) {
            if (status.code !== Code.UNAVAILABLE || !(status.details.startsWith('No connection established') || NAME_UNRESOLVED.test(status.details)))
              return forward(status);
            explain(status.details, endpoint, probeOnce).then(
              (why) => forward(why ? { ...status, details: why } : status),
              () => forward(status),
            );
          },
        });
      },
    });
}
