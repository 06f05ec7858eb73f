import { execFileSync, spawnSync } from 'node:child_process';
import { chownSync, existsSync, readdirSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { tmpDir } from './tmp.js';

/**
 * A real PostgreSQL server for one test file: Debian's `postgresql` package,
 * `initdb` and `pg_ctl` into a temporary directory, on a free loopback port.
 * PostgreSQL refuses to run as root, so as root it runs as the package's
 * `postgres` user.
 */
export interface PostgresServer {
  /** postgres://… of the `repr` database, as a scheduler's `--state` takes it. */
  url: string;
  port: number;
  /** A new, empty database on the same server; its URL. */
  createDatabase(name: string): string;
  /** Runs SQL through psql and returns its unaligned, tuples-only output. */
  psql(sql: string, database?: string): string;
  stop(): void;
}

/** Where Debian puts the server's programs: /usr/lib/postgresql/VERSION/bin, newest version. */
function binDir(): string {
  const root = '/usr/lib/postgresql';
  const versions = existsSync(root)
    ? readdirSync(root)
        .filter((v) => existsSync(path.join(root, v, 'bin', 'initdb')))
        .sort((a, b) => Number(b) - Number(a))
    : [];
  if (versions.length === 0) throw new Error('PostgreSQL is not installed: apt-get install postgresql (.ci/run does)');
  return path.join(root, versions[0]!, 'bin');
}

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}

/**
 * `settings` are extra server settings (`-c NAME=VALUE`), after the test
 * defaults so they override them: a benchmark wants fsync back on, or
 * pg_stat_statements preloaded.
 */
export async function startPostgres(settings: Record<string, string> = {}): Promise<PostgresServer> {
  const bin = binDir();
  const asRoot = process.getuid?.() === 0;
  const run = (program: string, args: string[]) => {
    const [cmd, argv] = asRoot ? ['runuser', ['-u', 'postgres', '--', path.join(bin, program), ...args]] : [path.join(bin, program), args];
    return execFileSync(cmd, argv, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  };
  const dir = tmpDir('repr-pg-');
  if (asRoot) chownSync(dir, uidOf('postgres'), gidOf('postgres'));
  const data = path.join(dir, 'data');
  run('initdb', ['-D', data, '-U', 'repr', '--auth=trust', '-E', 'UTF8', '--locale=C']);
  // A test database: durability buys nothing here, and fsync on a shared disk costs seconds.
  const port = await freePort();
  const options = `-c listen_addresses=127.0.0.1 -p ${port} -k ${dir} -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200${Object.entries(
    settings,
  )
    .map(([k, v]) => ` -c ${k}=${v}`)
    .join('')}`;
  run('pg_ctl', ['-D', data, '-l', path.join(dir, 'log'), '-o', options, '-w', '-t', '60', 'start']);
  let stopped = false;
  const stop = () => {
    if (stopped) return;
    stopped = true;
    spawnSync(
      asRoot ? 'runuser' : path.join(bin, 'pg_ctl'),
      [...(asRoot ? ['-u', 'postgres', '--', path.join(bin, 'pg_ctl')] : []), '-D', data, '-m', 'immediate', 'stop'],
      {
        stdio: 'ignore',
      },
    );
  };
  process.once('exit', stop);
  const psql = (sql: string, database = 'repr') =>
    run('psql', ['-h', '127.0.0.1', '-p', String(port), '-U', 'repr', '-d', database, '-v', 'ON_ERROR_STOP=1', '-At', '-c', sql]).trim();
  const urlOf = (db: string) => `postgres://repr@127.0.0.1:${port}/${db}`;
  psql('CREATE DATABASE repr', 'postgres');
  return {
    url: urlOf('repr'),
    port,
    createDatabase(name: string) {
      psql(`CREATE DATABASE "${name}"`, 'postgres');
      return urlOf(name);
    },
    psql,
    stop,
  };
}

function uidOf(user: string): number {
  return Number(execFileSync('id', ['-u', user], { encoding: 'utf8' }).trim());
}

function gidOf(user: string): number {
  return Number(execFileSync('id', ['-g', user], { encoding: 'utf8' }).trim());
}
