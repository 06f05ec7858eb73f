import Database from 'better-sqlite3';
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { type Clock, systemClock } from '../common/clock.js';
import { operationCollection } from './operation-name.js';

export interface OperationRow {
  name: string;
  instanceName: string;
  digestFunction: number;
  actionHash: string;
  actionSize: number;
  stage: number;
  priority: number;
  /** JSON of the platform requirements. */
  requirements: string;
  /** Encoded ExecuteResponse once done. */
  response: Buffer | null;
  createdMs: number;
  updatedMs: number;
}

/**
 * Operations persisted in SQLite (WAL), so that a restarted server still
 * answers for finished operations and picks unfinished ones up again. Every
 * write is a single statement; SQLite serializes them.
 */
export class OperationStore {
  private readonly db: Database.Database;
  private readonly stmts;

  constructor(
    file: string,
    private readonly clock: Clock = systemClock,
  ) {
    if (file !== ':memory:') mkdirSync(path.dirname(file), { recursive: true });
    this.db = new Database(file);
    this.db.pragma('journal_mode = WAL');
    this.db.pragma('synchronous = NORMAL');
    this.db.exec(`
      CREATE TABLE IF NOT EXISTS operations (
        name TEXT PRIMARY KEY,
        instance_name TEXT NOT NULL,
        digest_function INTEGER NOT NULL,
        action_hash TEXT NOT NULL,
        action_size INTEGER NOT NULL,
        stage INTEGER NOT NULL,
        priority INTEGER NOT NULL,
        requirements TEXT NOT NULL,
        response BLOB,
        created_ms INTEGER NOT NULL,
        updated_ms INTEGER NOT NULL
      );
      CREATE INDEX IF NOT EXISTS operations_unfinished ON operations(stage) WHERE response IS NULL;
      CREATE INDEX IF NOT EXISTS operations_by_instance ON operations(instance_name, name);
      -- Principals that started or joined an operation. Rows written before
      -- owners were recorded have none: only an admin reaches those.
      CREATE TABLE IF NOT EXISTS operation_owners (
        name TEXT NOT NULL,
        owner TEXT NOT NULL,
        PRIMARY KEY (owner, name)
      );
      CREATE INDEX IF NOT EXISTS operation_owners_by_name ON operation_owners(name);
    `);
    this.migrate();
    this.stmts = {
      insert: this.db.prepare(
        `INSERT INTO operations VALUES (@name, @instanceName, @digestFunction, @actionHash, @actionSize, @stage, @priority, @requirements, @response, @createdMs, @updatedMs)`,
      ),
      stage: this.db.prepare(`UPDATE operations SET stage = ?, updated_ms = ? WHERE name = ?`),
      complete: this.db.prepare(`UPDATE operations SET stage = ?, response = ?, updated_ms = ? WHERE name = ?`),
      get: this.db.prepare(`SELECT * FROM operations WHERE name = ?`),
      unfinished: this.db.prepare(`SELECT * FROM operations WHERE response IS NULL ORDER BY created_ms`),
      // The prefix as well as the column: a row is listed only under the name Get would accept.
      list: this.db.prepare(
        `SELECT * FROM operations WHERE instance_name = @instanceName AND name > @after AND substr(name, 1, length(@prefix)) = @prefix ORDER BY name LIMIT @limit`,
      ),
      listOwned: this.db.prepare(
        `SELECT o.* FROM operations o JOIN operation_owners w ON w.name = o.name AND w.owner = @owner
         WHERE o.instance_name = @instanceName AND o.name > @after AND substr(o.name, 1, length(@prefix)) = @prefix ORDER BY o.name LIMIT @limit`,
      ),
      delete: this.db.prepare(`DELETE FROM operations WHERE name = ?`),
      deleteOwners: this.db.prepare(`DELETE FROM operation_owners WHERE name = ?`),
      addOwner: this.db.prepare(`INSERT OR IGNORE INTO operation_owners (name, owner) VALUES (?, ?)`),
      owners: this.db.prepare(`SELECT owner FROM operation_owners WHERE name = ? ORDER BY owner`),
    };
    this.insertOwned = this.db.transaction((row: OperationRow, owner: string) => {
      this.stmts.insert.run(row);
      this.stmts.addOwner.run(row.name, owner);
    });
    this.deleteOwned = this.db.transaction((name: string) => {
      this.stmts.deleteOwners.run(name);
      return this.stmts.delete.run(name).changes > 0;
    });
  }

  private readonly insertOwned: (row: OperationRow, owner: string) => void;
  private readonly deleteOwned: (name: string) => boolean;

  /** A new operation and the principal that started it, in one transaction. */
  insert(row: OperationRow, owner: string): void {
    this.insertOwned(row, owner);
  }

  /** Records another principal (one that joined the operation) as its owner. */
  addOwner(name: string, owner: string): void {
    this.stmts.addOwner.run(name, owner);
  }

  owners(name: string): string[] {
    return (this.stmts.owners.all(name) as { owner: string }[]).map((r) => r.owner);
  }

  setStage(name: string, stage: number): void {
    this.stmts.stage.run(stage, this.clock.now(), name);
  }

  complete(name: string, stage: number, response: Buffer): void {
    this.stmts.complete.run(stage, response, this.clock.now(), name);
  }

  get(name: string): OperationRow | undefined {
    const r = this.stmts.get.get(name) as Record<string, unknown> | undefined;
    return r ? fromDb(r) : undefined;
  }

  unfinished(): OperationRow[] {
    return (this.stmts.unfinished.all() as Record<string, unknown>[]).map(fromDb);
  }

  /** Operations of one instance whose names sort after `after`, in name order; only those `owner` owns, if given. */
  list(instanceName: string, after: string, limit: number, owner?: string): OperationRow[] {
    const prefix = `${operationCollection(instanceName)}/`;
    const rows =
      owner === undefined
        ? this.stmts.list.all({ instanceName, after, prefix, limit })
        : this.stmts.listOwned.all({ instanceName, after, prefix, limit, owner });
    return (rows as Record<string, unknown>[]).map(fromDb);
  }

  delete(name: string): boolean {
    return this.deleteOwned(name);
  }

  close(): void {
    this.db.close();
  }

  /**
   * Version 1: operations of every instance used to be named `operations/{id}`,
   * which let any client address them. Rows of named instances take the
   * `{instance}/operations/{id}` form, so they stay reachable for their own
   * instance only; a client holding the old name gets NOT_FOUND and executes
   * again, which joins the operation if it is still running.
   */
  private migrate(): void {
    const version = this.db.pragma('user_version', { simple: true }) as number;
    if (version >= 1) return;
    this.db.transaction(() => {
      this.db.exec(`
        UPDATE operations SET name = instance_name || '/operations/' || substr(name, 12)
        WHERE instance_name != '' AND substr(name, 1, 11) = 'operations/' AND instr(substr(name, 12), '/') = 0;
      `);
      this.db.pragma('user_version = 1');
    })();
  }
}

function fromDb(r: Record<string, unknown>): OperationRow {
  return {
    name: r.name as string,
    instanceName: r.instance_name as string,
    digestFunction: r.digest_function as number,
    actionHash: r.action_hash as string,
    actionSize: r.action_size as number,
    stage: r.stage as number,
    priority: r.priority as number,
    requirements: r.requirements as string,
    response: (r.response as Buffer | null) ?? null,
    createdMs: r.created_ms as number,
    updatedMs: r.updated_ms as number,
  };
}
