import pg from 'pg';
import { Code, ReprError } from '../common/errors.js';
import { redactPostgresUrl } from '../storage/postgres-url.js';
import type { Logger } from '../common/logger.js';
import type { ExecutorCapabilities, Requirement } from '../executor/platform.js';
import { ExecutionStage_Value } from '../proto/build/bazel/remote/execution/v2/remote_execution.js';
import { operationCollection } from './operation-name.js';

/**
 * The state several schedulers share, in PostgreSQL. Every scheduler may
 * write every table; what keeps them apart is that each change is one
 * statement (or one transaction) whose condition says whose it is:
 *
 * - repr_operations: every operation and, once done, its ExecuteResponse;
 *   written by the scheduler that accepted it, staged by the one that
 *   claimed it, finished by the one whose lease is still current.
 * - repr_operation_owners: principals that started or joined an operation.
 * - repr_queue: unfinished executions, with the Action and Command an
 *   executor needs (no CAS read to start one). `leased_by`/`lease` say which
 *   scheduler executes it under which lease: a result is recorded only while
 *   its lease is current, so it is recorded once however many executors the
 *   action went through.
 * - repr_inflight: the merge index, action key to the operation executing it
 *   (never for do_not_cache actions), removed in the statement that finishes
 *   the operation.
 * - repr_schedulers: one row per live scheduler, its heartbeat and expiry
 *   (the database's clock, so schedulers' clocks need not agree), and what
 *   its executors can do.
 *
 * Wake-ups travel by NOTIFY, sent in the statement that makes the change, so
 * no one hears of a change that is not committed: `repr_queue` (work to
 * claim), `repr_op` ("STAGE:NAME", an operation moved), `repr_cancel` (NAME,
 * stop executing it).
 */

export const CHANNELS = { queue: 'repr_queue', op: 'repr_op', cancel: 'repr_cancel' } as const;

const MIGRATIONS: readonly string[] = [
  `CREATE TABLE repr_schedulers (
     id text PRIMARY KEY,
     address text NOT NULL,
     started_at timestamptz NOT NULL DEFAULT now(),
     heartbeat_at timestamptz NOT NULL DEFAULT now(),
     expires_at timestamptz NOT NULL,
     workers integer NOT NULL DEFAULT 0,
     executors integer NOT NULL DEFAULT 0,
     busy integer NOT NULL DEFAULT 0,
     capabilities jsonb NOT NULL DEFAULT '[]'
   );
   CREATE TABLE repr_operations (
     name text PRIMARY KEY,
     instance_name text NOT NULL,
     digest_function integer NOT NULL,
     action_hash text NOT NULL,
     action_size bigint NOT NULL,
     stage integer NOT NULL,
     response bytea,
     created_at timestamptz NOT NULL DEFAULT now(),
     updated_at timestamptz NOT NULL DEFAULT now()
   );
   CREATE INDEX repr_operations_by_instance ON repr_operations (instance_name, name);
   CREATE TABLE repr_operation_owners (
     name text NOT NULL REFERENCES repr_operations ON DELETE CASCADE,
     owner text NOT NULL,
     PRIMARY KEY (owner, name)
   );
   CREATE INDEX repr_operation_owners_by_name ON repr_operation_owners (name);
   CREATE TABLE repr_queue (
     name text PRIMARY KEY REFERENCES repr_operations ON DELETE CASCADE,
     seq bigserial NOT NULL,
     priority integer NOT NULL,
     requirements jsonb NOT NULL,
     action bytea NOT NULL,
     command bytea NOT NULL,
     trace jsonb,
     queued_at timestamptz NOT NULL DEFAULT now(),
     attempts integer NOT NULL DEFAULT 0,
     leased_by text,
     lease text,
     leased_at timestamptz,
     cancelled boolean NOT NULL DEFAULT false
   );
   CREATE INDEX repr_queue_waiting ON repr_queue (priority, seq) WHERE leased_by IS NULL;
   CREATE INDEX repr_queue_leased ON repr_queue (leased_by) WHERE leased_by IS NOT NULL;
   CREATE TABLE repr_inflight (
     merge_key text PRIMARY KEY,
     name text NOT NULL
   );
   CREATE INDEX repr_inflight_by_name ON repr_inflight (name);`,
];

/** Any number that fits: the lock every scheduler takes while it migrates, so two starting at once do not both migrate. */
const MIGRATION_LOCK = 0x7265_7072;

export interface OperationRecord {
  name: string;
  instanceName: string;
  digestFunction: number;
  actionHash: string;
  actionSize: number;
  stage: number;
  response: Buffer | null;
}

export interface NewOperation {
  name: string;
  instanceName: string;
  digestFunction: number;
  actionHash: string;
  actionSize: number;
  /** Unset for do_not_cache actions: nothing joins them. */
  mergeKey?: string;
  priority: number;
  requirements: readonly Requirement[];
  action: Uint8Array;
  command: Uint8Array;
  trace?: Record<string, string>;
}

/** An execution a scheduler took from the queue, under a lease that is its alone. */
export interface Claimed {
  name: string;
  lease: string;
  instanceName: string;
  digestFunction: number;
  actionHash: string;
  actionSize: number;
  requirements: Requirement[];
  action: Buffer;
  command: Buffer;
  trace: Record<string, string> | null;
  queuedAt: Date;
  /** Executions started, this one included. */
  attempts: number;
  cancelled: boolean;
  /** Which of the offered executors takes it. */
  slot: number;
}

export interface PeerRow {
  id: string;
  address: string;
  startedAt: Date;
  heartbeatAt: Date;
  workers: number;
  executors: number;
  busy: number;
  capabilities: ExecutorCapabilities[];
}

export interface SchedulerLoad {
  workers: number;
  executors: number;
  busy: number;
  capabilities: readonly ExecutorCapabilities[];
}

const OPERATION_COLUMNS = 'name, instance_name, digest_function, action_hash, action_size, stage, response';

function toRecord(r: Record<string, unknown>): OperationRecord {
  return {
    name: r.name as string,
    instanceName: r.instance_name as string,
    digestFunction: r.digest_function as number,
    actionHash: r.action_hash as string,
    actionSize: Number(r.action_size),
    stage: r.stage as number,
    response: (r.response as Buffer | null) ?? null,
  };
}

const { QUEUED, EXECUTING, COMPLETED } = ExecutionStage_Value;

export class PgState {
  private constructor(
    private readonly pool: pg.Pool,
    readonly url: string,
    private readonly log: Logger,
  ) {}

  /** Connects and brings the schema up to date; UNAVAILABLE, naming the database, when it cannot be reached. */
  static async open(url: string, log: Logger, poolSize = 10): Promise<PgState> {
    const pool = new pg.Pool({ connectionString: url, max: poolSize, connectionTimeoutMillis: 10_000 });
    // An idle connection the server drops must not take the process down.
    pool.on('error', (e) => log.warn({ err: e, database: redactPostgresUrl(url) }, 'lost an idle database connection'));
    const state = new PgState(pool, url, log);
    try {
      await state.migrate();
    } catch (e) {
      await pool.end();
      throw unavailable(url, e);
    }
    return state;
  }

  private async migrate(): Promise<void> {
    const c = await this.pool.connect();
    try {
      await c.query('BEGIN');
      await c.query('SELECT pg_advisory_xact_lock($1)', [MIGRATION_LOCK]);
      await c.query('CREATE TABLE IF NOT EXISTS repr_schema (version integer NOT NULL)');
      const r = await c.query('SELECT version FROM repr_schema');
      let version = r.rows.length > 0 ? (r.rows[0].version as number) : 0;
      if (r.rows.length === 0) await c.query('INSERT INTO repr_schema VALUES (0)');
      if (version > MIGRATIONS.length)
        throw new ReprError(Code.FAILED_PRECONDITION, `the database has schema version ${version}, newer than this repr's ${MIGRATIONS.length}; upgrade repr`);
      for (; version < MIGRATIONS.length; version++) {
        await c.query(MIGRATIONS[version]!);
        await c.query('UPDATE repr_schema SET version = $1', [version + 1]);
        this.log.info({ version: version + 1 }, 'database schema migrated');
      }
      await c.query('COMMIT');
    } catch (e) {
      await c.query('ROLLBACK').catch(() => undefined);
      throw e;
    } finally {
      c.release();
    }
  }

  private async q(sql: string, params: unknown[] = []): Promise<pg.QueryResult> {
    try {
      return await this.pool.query(sql, params);
    } catch (e) {
      throw unavailable(this.url, e);
    }
  }

  /** A dedicated connection for LISTEN; the caller ends it. */
  async listener(): Promise<pg.Client> {
    const c = new pg.Client({ connectionString: this.url });
    await c.connect();
    await c.query(`LISTEN ${CHANNELS.queue}; LISTEN ${CHANNELS.op}; LISTEN ${CHANNELS.cancel}`);
    return c;
  }

  /** Adds or renews this scheduler's row; false if it had expired and been removed (its leases were taken back). */
  async heartbeat(id: string, address: string, ttlMs: number, load: SchedulerLoad): Promise<boolean> {
    const params = [id, address, ttlMs, load.workers, load.executors, load.busy, JSON.stringify(load.capabilities)];
    const r = await this.q(
      `UPDATE repr_schedulers SET heartbeat_at = now(), expires_at = now() + $3 * interval '1 millisecond',
         address = $2, workers = $4, executors = $5, busy = $6, capabilities = $7
       WHERE id = $1 RETURNING id`,
      params,
    );
    if (r.rowCount) return true;
    await this.q(
      `INSERT INTO repr_schedulers (id, address, expires_at, workers, executors, busy, capabilities)
       VALUES ($1, $2, now() + $3 * interval '1 millisecond', $4, $5, $6, $7)`,
      params,
    );
    return false;
  }

  /** Leaves the farm: the others need not wait for the row to expire. Leases still held go back to the queue. */
  async leave(id: string): Promise<void> {
    await this.q(`DELETE FROM repr_schedulers WHERE id = $1`, [id]);
    await this.recoverDead();
  }

  /**
   * Takes back what expired schedulers held: their rows go, their leases
   * (and any lease whose scheduler has no row) go back in line. Returns the
   * schedulers removed and how many executions were put back.
   */
  async recoverDead(): Promise<{ dead: string[]; requeued: number }> {
    const r = await this.q(
      `WITH dead AS (
         DELETE FROM repr_schedulers WHERE expires_at < now() RETURNING id
       ), back AS (
         UPDATE repr_queue SET leased_by = NULL, lease = NULL, leased_at = NULL
         WHERE leased_by IN (SELECT id FROM dead)
            OR (leased_by IS NOT NULL AND leased_by NOT IN (SELECT id FROM repr_schedulers))
         RETURNING name
       ), staged AS (
         UPDATE repr_operations SET stage = ${QUEUED}, updated_at = now()
         WHERE name IN (SELECT name FROM back)
         RETURNING pg_notify('${CHANNELS.op}', '${QUEUED}:' || name)
       )
       SELECT (SELECT coalesce(array_agg(id), '{}') FROM dead) AS dead,
              (SELECT count(*) FROM staged)::int AS requeued`,
    );
    const row = r.rows[0] as { dead: string[]; requeued: number };
    if (row.requeued > 0) await this.q(`SELECT pg_notify('${CHANNELS.queue}', '')`);
    return row;
  }

  async peers(): Promise<PeerRow[]> {
    const r = await this.q(`SELECT * FROM repr_schedulers WHERE expires_at >= now() ORDER BY started_at, id`);
    return r.rows.map((x) => ({
      id: x.id,
      address: x.address,
      startedAt: x.started_at,
      heartbeatAt: x.heartbeat_at,
      workers: x.workers,
      executors: x.executors,
      busy: x.busy,
      capabilities: x.capabilities as ExecutorCapabilities[],
    }));
  }

  /**
   * Executions waiting for an executor, every scheduler's, grouped by their
   * requirements (what an autoscaler needs to tell pools apart). The same
   * scan of the waiting rows a plain count makes, plus hashing each row's
   * requirements; it returns a row per distinct set, a handful in practice.
   */
  async waiting(): Promise<{ requirements: Requirement[]; count: number }[]> {
    const r = await this.q(`SELECT requirements, count(*)::int AS n FROM repr_queue WHERE leased_by IS NULL GROUP BY requirements`);
    return (r.rows as { requirements: Requirement[]; n: number }[]).map((row) => ({ requirements: row.requirements, count: row.n }));
  }

  /**
   * Queues a new operation, or joins the one executing the same action: one
   * statement, so that two schedulers given the same action at once agree on
   * one operation. Returns the operation's name, whether it is the new one,
   * and its stage.
   */
  async submit(op: NewOperation, owner: string): Promise<{ name: string; fresh: boolean; stage: number }> {
    const inflight = op.mergeKey
      ? `INSERT INTO repr_inflight (merge_key, name) VALUES ($13, $1)
         ON CONFLICT (merge_key) DO UPDATE SET merge_key = excluded.merge_key
         RETURNING name, name = $1 AS fresh`
      : `SELECT $1::text AS name, true AS fresh`;
    const params: unknown[] = [
      op.name,
      op.instanceName,
      op.digestFunction,
      op.actionHash,
      op.actionSize,
      op.priority,
      JSON.stringify(op.requirements),
      Buffer.from(op.action),
      Buffer.from(op.command),
      op.trace ? JSON.stringify(op.trace) : null,
      owner,
      QUEUED,
    ];
    if (op.mergeKey) params.push(op.mergeKey);
    const r = await this.q(
      `WITH inf AS (${inflight}),
       op AS (
         INSERT INTO repr_operations (name, instance_name, digest_function, action_hash, action_size, stage)
         SELECT $1, $2, $3, $4, $5, $12 FROM inf WHERE fresh
         RETURNING name
       ), queued AS (
         INSERT INTO repr_queue (name, priority, requirements, action, command, trace)
         SELECT name, $6, $7, $8, $9, $10 FROM op
       ), owned AS (
         INSERT INTO repr_operation_owners (name, owner) SELECT name, $11 FROM inf ON CONFLICT DO NOTHING
       )
       SELECT inf.name, inf.fresh,
              coalesce((SELECT stage FROM repr_operations o WHERE o.name = inf.name), $12) AS stage,
              CASE WHEN inf.fresh THEN pg_notify('${CHANNELS.queue}', '') END AS woke
       FROM inf`,
      params,
    );
    const row = r.rows[0] as { name: string; fresh: boolean; stage: number };
    return { name: row.name, fresh: row.fresh, stage: row.stage };
  }

  /** An operation that finished without executing (an action-cache hit). */
  async insertCompleted(rec: Omit<OperationRecord, 'stage'> & { response: Buffer }, owner: string): Promise<void> {
    await this.q(
      `WITH op AS (
         INSERT INTO repr_operations (name, instance_name, digest_function, action_hash, action_size, stage, response)
         VALUES ($1, $2, $3, $4, $5, ${COMPLETED}, $6) RETURNING name
       )
       INSERT INTO repr_operation_owners (name, owner) SELECT name, $7 FROM op`,
      [rec.name, rec.instanceName, rec.digestFunction, rec.actionHash, rec.actionSize, rec.response, owner],
    );
  }

  /**
   * Takes waiting executions for the offered executors, first in line first
   * (priority, then arrival), each for the first offered executor that can
   * execute it. Rows other schedulers are claiming are skipped, not waited
   * for; only the first `window` waiting rows are looked at.
   */
  async claim(
    schedulerId: string,
    offered: readonly ExecutorCapabilities[],
    match: (reqs: Requirement[], caps: ExecutorCapabilities) => boolean,
    window: number,
    newLease: () => string,
  ): Promise<Claimed[]> {
    let c: pg.PoolClient;
    try {
      c = await this.pool.connect();
    } catch (e) {
      throw unavailable(this.url, e);
    }
    try {
      await c.query('BEGIN');
      const waiting = await c.query(
        `SELECT name, requirements FROM repr_queue WHERE leased_by IS NULL ORDER BY priority, seq LIMIT $1 FOR UPDATE SKIP LOCKED`,
        [window],
      );
      const free = offered.map((_, i) => i);
      const names: string[] = [];
      const leases: string[] = [];
      const slots: number[] = [];
      for (const row of waiting.rows as { name: string; requirements: Requirement[] }[]) {
        if (free.length === 0) break;
        const k = free.findIndex((i) => match(row.requirements, offered[i]!));
        if (k < 0) continue;
        names.push(row.name);
        leases.push(newLease());
        slots.push(free[k]!);
        free.splice(k, 1);
      }
      if (names.length === 0) {
        await c.query('COMMIT');
        return [];
      }
      const r = await c.query(
        `WITH pick AS (
           SELECT unnest($2::text[]) AS name, unnest($3::text[]) AS lease, unnest($4::int[]) AS slot
         ), claimed AS (
           UPDATE repr_queue q SET leased_by = $1, lease = pick.lease, leased_at = now(), attempts = q.attempts + 1
           FROM pick WHERE q.name = pick.name
           RETURNING q.name, q.lease, q.requirements, q.action, q.command, q.trace, q.queued_at, q.attempts, q.cancelled, pick.slot
         ), staged AS (
           UPDATE repr_operations o SET stage = ${EXECUTING}, updated_at = now()
           FROM claimed WHERE o.name = claimed.name
           RETURNING o.name, o.instance_name, o.digest_function, o.action_hash, o.action_size, pg_notify('${CHANNELS.op}', '${EXECUTING}:' || o.name)
         )
         SELECT claimed.*, staged.instance_name, staged.digest_function, staged.action_hash, staged.action_size
         FROM claimed JOIN staged USING (name)`,
        [schedulerId, names, leases, slots],
      );
      await c.query('COMMIT');
      return r.rows.map((x) => ({
        name: x.name,
        lease: x.lease,
        instanceName: x.instance_name,
        digestFunction: x.digest_function,
        actionHash: x.action_hash,
        actionSize: Number(x.action_size),
        requirements: x.requirements,
        action: x.action,
        command: x.command,
        trace: x.trace,
        queuedAt: x.queued_at,
        attempts: x.attempts,
        cancelled: x.cancelled,
        slot: x.slot,
      }));
    } catch (e) {
      await c.query('ROLLBACK').catch(() => undefined);
      throw unavailable(this.url, e);
    } finally {
      c.release();
    }
  }

  /**
   * Records the outcome of an execution, if `lease` is still the current one
   * (or, with lease undefined, if nobody has claimed it): the one place an
   * operation is finished, so it is finished once. False if the lease was
   * taken back meanwhile (the result is stale; another execution will finish
   * the operation).
   */
  async finish(name: string, lease: string | undefined, response: Uint8Array): Promise<boolean> {
    const r = await this.q(
      `WITH done AS (
         DELETE FROM repr_queue WHERE name = $1 AND (lease = $2 OR ($2::text IS NULL AND leased_by IS NULL)) RETURNING name
       ), merged AS (
         DELETE FROM repr_inflight WHERE name IN (SELECT name FROM done)
       )
       UPDATE repr_operations SET stage = ${COMPLETED}, response = $3, updated_at = now()
       WHERE name IN (SELECT name FROM done)
       RETURNING pg_notify('${CHANNELS.op}', '${COMPLETED}:' || name)`,
      [name, lease ?? null, Buffer.from(response)],
    );
    return (r.rowCount ?? 0) > 0;
  }

  /** Puts an execution whose executor was lost back in line, at its old place; false if the lease was not current. */
  async requeue(name: string, lease: string): Promise<boolean> {
    const r = await this.q(
      `WITH back AS (
         UPDATE repr_queue SET leased_by = NULL, lease = NULL, leased_at = NULL
         WHERE name = $1 AND lease = $2 RETURNING name
       )
       UPDATE repr_operations SET stage = ${QUEUED}, updated_at = now()
       WHERE name IN (SELECT name FROM back)
       RETURNING pg_notify('${CHANNELS.op}', '${QUEUED}:' || name), pg_notify('${CHANNELS.queue}', '')`,
      [name, lease],
    );
    return (r.rowCount ?? 0) > 0;
  }

  /**
   * Asks for an unfinished operation to stop: marked cancelled (a scheduler
   * that claims it later finishes it as cancelled at once) and the scheduler
   * executing it is told. Returns whether it was waiting unclaimed (the
   * caller then finishes it) or executing; undefined if it is not in line.
   */
  async requestCancel(name: string): Promise<'waiting' | 'executing' | undefined> {
    const r = await this.q(
      `UPDATE repr_queue SET cancelled = true WHERE name = $1
       RETURNING leased_by IS NULL AS waiting, pg_notify('${CHANNELS.cancel}', name)`,
      [name],
    );
    if (!r.rowCount) return undefined;
    return r.rows[0].waiting ? 'waiting' : 'executing';
  }

  async get(name: string): Promise<OperationRecord | undefined> {
    const r = await this.q(`SELECT ${OPERATION_COLUMNS} FROM repr_operations WHERE name = $1`, [name]);
    return r.rows[0] ? toRecord(r.rows[0]) : undefined;
  }

  async getMany(names: readonly string[]): Promise<OperationRecord[]> {
    const r = await this.q(`SELECT ${OPERATION_COLUMNS} FROM repr_operations WHERE name = ANY($1::text[])`, [names]);
    return r.rows.map(toRecord);
  }

  async owners(name: string): Promise<string[]> {
    const r = await this.q(`SELECT owner FROM repr_operation_owners WHERE name = $1 ORDER BY owner`, [name]);
    return r.rows.map((x) => x.owner as string);
  }

  async list(instanceName: string, after: string, limit: number, owner?: string): Promise<OperationRecord[]> {
    // The prefix as well as the column: a row is listed only under the name Get would accept.
    const prefix = `${operationCollection(instanceName)}/`;
    const r =
      owner === undefined
        ? await this.q(
            `SELECT ${OPERATION_COLUMNS} FROM repr_operations
             WHERE instance_name = $1 AND name > $2 AND left(name, length($3)) = $3 ORDER BY name LIMIT $4`,
            [instanceName, after, prefix, limit],
          )
        : await this.q(
            `SELECT o.name, o.instance_name, o.digest_function, o.action_hash, o.action_size, o.stage, o.response
             FROM repr_operations o JOIN repr_operation_owners w ON w.name = o.name AND w.owner = $5
             WHERE o.instance_name = $1 AND o.name > $2 AND left(o.name, length($3)) = $3 ORDER BY o.name LIMIT $4`,
            [instanceName, after, prefix, limit, owner],
          );
    return r.rows.map(toRecord);
  }

  async delete(name: string): Promise<boolean> {
    const r = await this.q(
      `WITH merged AS (DELETE FROM repr_inflight WHERE name = $1)
       DELETE FROM repr_operations WHERE name = $1 RETURNING name`,
      [name],
    );
    return (r.rowCount ?? 0) > 0;
  }

  async close(): Promise<void> {
    await this.pool.end();
  }
}

/** A database error as the status a caller can act on: the database is unreachable or failing, named without its password. */
export function unavailable(url: string, e: unknown): ReprError {
  if (e instanceof ReprError) return e;
  const message = (e as Error).message || String(e);
  return new ReprError(Code.UNAVAILABLE, `state database ${redactPostgresUrl(url)}: ${message}`);
}
