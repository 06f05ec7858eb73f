import { lookup } from 'node:dns/promises';
import { isIP } from 'node:net';
import { type DialTls, isTlsTarget, tlsFor } from '../grpc/dial.js';

/** One scheduler a worker can dial: an address it was given, or one address a name it was given resolved to. */
export interface SchedulerEndpoint {
  /** What is dialled: grpc://host:port or grpcs://host:port. */
  target: string;
  /** How logs and messages name it: the target, or the configured address with the resolved one in brackets. */
  label: string;
  /** The configured name a grpcs:// certificate must carry when `target` holds an address it resolved to. */
  serverName?: string;
}

/** Every address a host name resolves to, in the resolver's order. */
export type ResolveHost = (host: string) => Promise<string[]>;

export const systemResolveHost: ResolveHost = async (host) => (await lookup(host, { all: true })).map((a) => a.address);

/**
 * The schedulers behind `targets` (normalized, as parseTarget writes them):
 * a name that resolves to several addresses counts as one scheduler each, so
 * that a worker whose scheduler died tries the name's other addresses itself
 * rather than leaving the choice to whichever one grpc-js picks. Resolved
 * again at every reconnect, a scheduler added to DNS is found without
 * restarting workers. A name with one address, or none right now, is dialled
 * as it is: grpc-js then resolves it, and says so when it cannot.
 */
export async function resolveSchedulers(targets: readonly string[], resolveHost: ResolveHost = systemResolveHost): Promise<SchedulerEndpoint[]> {
  const byTarget = new Map<string, SchedulerEndpoint>();
  for (const target of targets) {
    for (const endpoint of await expand(target, resolveHost)) if (!byTarget.has(endpoint.target)) byTarget.set(endpoint.target, endpoint);
  }
  return [...byTarget.values()];
}

async function expand(target: string, resolveHost: ResolveHost): Promise<SchedulerEndpoint[]> {
  const m = /^(grpcs?):\/\/(.*):(\d+)$/.exec(target);
  const as = { target, label: target };
  if (!m) return [as];
  const [, scheme, host, port] = m as unknown as [string, string, string, string];
  if (host.startsWith('[') || isIP(host)) return [as];
  let addresses: string[];
  try {
    addresses = [...new Set(await resolveHost(host))];
  } catch {
    return [as];
  }
  if (addresses.length <= 1) return [as];
  return addresses.map((address) => {
    const hostPart = isIP(address) === 6 ? `[${address}]` : address;
    return { target: `${scheme}://${hostPart}:${port}`, label: `${target} (${address})`, serverName: host };
  });
}

/**
 * What dialling `target` takes of the worker's TLS settings: none for
 * plaintext; for an address a name resolved to, the certificate is checked
 * against that name (unless the settings name another).
 */
export function endpointTls(target: string, tls: DialTls | undefined, serverName?: string): { tls?: DialTls } {
  if (!isTlsTarget(target)) return {};
  const given = tlsFor(target, tls);
  if (serverName && !given?.serverName) return { tls: { ...given, serverName } };
  return given ? { tls: given } : {};
}
