/**
 * What config validation and error messages need to know about a PostgreSQL
 * URL, without loading the driver: which scheme is accepted, where it points,
 * and how to show it with its password hidden (config files and logs are
 * read by more people than the database's owner).
 */

/** Names a table may have: an unquoted lower-case identifier, so it means the same quoted or not. */
export const TABLE_NAME = /^[a-z_][a-z0-9_]{0,62}$/;

/** Why `url` cannot name a PostgreSQL database, or undefined if it can. The URL in the message is redacted. */
export function postgresUrlProblem(url: string): string | undefined {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    return 'is not a URL; write postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE';
  }
  if (parsed.protocol !== 'postgres:' && parsed.protocol !== 'postgresql:') {
    return `${redactPostgresUrl(url)} is not a postgres:// or postgresql:// URL`;
  }
  if (!parsed.hostname && !parsed.searchParams.get('host')) return `${redactPostgresUrl(url)} names no host`;
  return undefined;
}

/** `url` with any password replaced by `***`. Text that is not a URL is hidden whole: it may be a password pasted in the wrong place. */
export function redactPostgresUrl(url: string): string {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    return '(not a URL)';
  }
  if (parsed.password) parsed.password = '***';
  if (parsed.searchParams.has('password')) parsed.searchParams.set('password', '***');
  return parsed.toString();
}

/** host:port/database of `url`, for messages: never its user or password. */
export function postgresEndpoint(url: string): string {
  try {
    const u = new URL(url);
    // A host in the query (a Unix socket directory) wins over the URL's, as libpq has it.
    const host = u.searchParams.get('host') ?? u.hostname;
    const database = decodeURIComponent(u.pathname.replace(/^\//, ''));
    return `${host}:${u.port || '5432'}/${database}`;
  } catch {
    return '(not a URL)';
  }
}
