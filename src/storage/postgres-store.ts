import { Readable } from 'node:stream';
import pg from 'pg';
import { type Digest, digestKey, digestString } from '../common/digest.js';
import { Code, internal, invalidArgument, notFound, ReprError, resourceExhausted, unavailable } from '../common/errors.js';
import { type BlobStore, type BlobWriter, bufferingWriter } from './blob-store.js';
import { postgresEndpoint, postgresUrlProblem, TABLE_NAME } from './postgres-url.js';
import { resolveRange } from './range.js';

const MiB = 1024 * 1024;

export const DEFAULT_POSTGRES_TABLE = 'repr_action_results';

/**
 * One row holds one blob, and PostgreSQL sends a row whole: a store that took
 * gigabytes into a row would hold them in the server's memory and ours at
 * every read. Action results are a few kilobytes; this leaves room for huge
 * ones (thousands of outputs) and refuses what only a CAS should hold.
 */
export const DEFAULT_POSTGRES_MAX_BLOB_BYTES = 64 * MiB;

export interface PostgresStoreOptions {
  /** postgres:// or postgresql:// */
  url: string;
  /** Default repr_action_results; created if missing. */
  table?: string;
  maxBlobBytes?: number;
  /** How long to wait for a connection before a call fails UNAVAILABLE. Default 5 s. */
  connectTimeoutMs?: number;
}

/**
 * Blobs in one PostgreSQL table: what lets schedulers that share a database
 * share an action cache, a result recorded through one being served by all.
 * Keys are whole digests (function, hash and size); the action cache hands it
 * acKey()s, never a client's own digest. Rows are never evicted: `updated_at`
 * says when each was last written, for an operator who wants to prune.
 *
 * A change of AC_KEY_FORMAT needs nothing here: keys of another format are
 * other hashes, so old rows are never hit, only left for pruning.
 */
export class PostgresBlobStore implements BlobStore {
  private readonly pool: pg.Pool;
  private readonly table: string;
  private readonly where: string;
  private readonly maxBlobBytes: number;
  private closed = false;

  private constructor(o: PostgresStoreOptions) {
    const problem = postgresUrlProblem(o.url);
    if (problem) throw invalidArgument(`PostgreSQL store url ${problem}`);
    this.table = o.table ?? DEFAULT_POSTGRES_TABLE;
    if (!TABLE_NAME.test(this.table)) throw invalidArgument(`PostgreSQL table name "${this.table}" is not a plain lower-case identifier`);
    this.maxBlobBytes = o.maxBlobBytes ?? DEFAULT_POSTGRES_MAX_BLOB_BYTES;
    this.where = `PostgreSQL at ${postgresEndpoint(o.url)}`;
    this.pool = new pg.Pool({
      connectionString: o.url,
      connectionTimeoutMillis: o.connectTimeoutMs ?? 5000,
      // A connection that stops answering (a network partition) would
      // otherwise hold a build's lookups forever; no query here takes long.
      query_timeout: 30_000,
    });
    // An idle connection that dies (the database restarts) is reported on the
    // pool, and unheard that event would end the process. Nothing is lost by
    // ignoring it: the next query opens a new connection and reports any
    // failure to its caller.
    this.pool.on('error', () => undefined);
  }

  /** Connects and creates the table if it is missing: a database that cannot be used fails the start, not the first build. */
  static async open(o: PostgresStoreOptions): Promise<PostgresBlobStore> {
    const store = new PostgresBlobStore(o);
    try {
      await store.createTable();
    } catch (e) {
      await store.close();
      throw e;
    }
    return store;
  }

  private async createTable(): Promise<void> {
    // Servers starting together would each find the table missing, and all but
    // one fail on the catalogue (duplicate type or key, depending on timing):
    // the lock, named after the table, lets one create it and the others see it.
    let client: pg.PoolClient;
    try {
      client = await this.pool.connect();
    } catch (e) {
      throw this.databaseError(e);
    }
    try {
      await client.query('BEGIN');
      await client.query('SELECT pg_advisory_xact_lock(hashtext($1))', [`repr store ${this.table}`]);
      await client.query(`CREATE TABLE IF NOT EXISTS "${this.table}" (
        key text PRIMARY KEY,
        value bytea NOT NULL,
        size bigint NOT NULL,
        updated_at timestamptz NOT NULL DEFAULT now()
      )`);
      await client.query('COMMIT');
      client.release();
    } catch (e) {
      // A connection in an unknown state is not given back to the pool.
      client.release(true);
      throw this.databaseError(e);
    }
  }

  async findMissing(digests: readonly Digest[]): Promise<Digest[]> {
    if (digests.length === 0) return [];
    const keys = digests.map(digestKey);
    const { rows } = await this.query<{ key: string }>(`SELECT key FROM "${this.table}" WHERE key = ANY($1::text[])`, [keys]);
    const present = new Set(rows.map((r) => r.key));
    return digests.filter((_, i) => !present.has(keys[i]!));
  }

  async get(digest: Digest): Promise<Buffer> {
    const { rows } = await this.query<{ value: Buffer }>(`SELECT value FROM "${this.table}" WHERE key = $1`, [digestKey(digest)]);
    if (!rows[0]) throw this.missing(digest);
    return rows[0].value;
  }

  async read(digest: Digest, offset = 0, limit = 0): Promise<Readable> {
    // Only the range crosses the network. Arguments are clamped to what SQL
    // takes; the range itself is checked against the real size below.
    const from = Math.min(Math.max(offset, 0), this.maxBlobBytes + 1) + 1;
    const count = limit > 0 ? Math.min(limit, this.maxBlobBytes) : this.maxBlobBytes;
    const { rows } = await this.query<{ size: number; part: Buffer }>(
      `SELECT octet_length(value) AS size, substring(value FROM $2::int FOR $3::int) AS part FROM "${this.table}" WHERE key = $1`,
      [digestKey(digest), from, count],
    );
    if (!rows[0]) throw this.missing(digest);
    const { start, end } = resolveRange(rows[0].size, offset, limit);
    return Readable.from([rows[0].part.subarray(0, end - start)], { objectMode: false });
  }

  async put(digest: Digest, data: Buffer): Promise<void> {
    this.checkSize(digest, data.length);
    await this.query(
      `INSERT INTO "${this.table}" (key, value, size, updated_at) VALUES ($1, $2, $3, now())
       ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, size = EXCLUDED.size, updated_at = EXCLUDED.updated_at`,
      [digestKey(digest), data, data.length],
    );
  }

  /** Buffered, since a row is written whole; the size bound applies as bytes arrive, not at commit. */
  beginWrite(digest: Digest): BlobWriter {
    return bufferingWriter(
      (data) => this.put(digest, data),
      (bytes) => this.checkSize(digest, bytes),
    );
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.pool.end();
  }

  private checkSize(digest: Digest, bytes: number): void {
    if (bytes > this.maxBlobBytes) {
      throw resourceExhausted(`blob ${digestString(digest)} (${bytes}+ bytes) exceeds the PostgreSQL store's limit of ${this.maxBlobBytes} bytes per blob`);
    }
  }

  private missing(digest: Digest): ReprError {
    return notFound(`blob ${digestString(digest)} not found in ${this.where}`);
  }

  private async query<R extends pg.QueryResultRow>(sql: string, params: unknown[]): Promise<pg.QueryResult<R>> {
    if (this.closed) throw unavailable(`the store over ${this.where} is closed`);
    try {
      return await this.pool.query<R>(sql, params);
    } catch (e) {
      throw this.databaseError(e);
    }
  }

  /**
   * UNAVAILABLE for what a retry or an operator can fix (no connection, the
   * server shutting down or full, credentials refused), INTERNAL for a query
   * the database rejects. The message names the database, never the URL: it
   * may hold a password.
   */
  private databaseError(e: unknown): ReprError {
    const message = e instanceof Error ? e.message : String(e);
    // Without a SQLSTATE the driver or the socket failed: refused, timed out, dropped.
    const sqlState = e instanceof pg.DatabaseError ? (e.code ?? '') : undefined;
    // Connection exceptions, refused credentials, a full server, one shutting down, a missing database.
    if (sqlState === undefined || /^(08|28|53|57P|3D)/.test(sqlState)) {
      return new ReprError(Code.UNAVAILABLE, `cannot use ${this.where}: ${message}`, { cause: e });
    }
    return internal(`query failed on ${this.where}: ${message} (SQLSTATE ${sqlState})`, e);
  }
}
