import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { computeDigest, type Digest, SHA256 } from '../../../src/common/digest.js';
import { Code, codeOf } from '../../../src/common/errors.js';
import { readAll } from '../../../src/storage/blob-store.js';
import { DEFAULT_POSTGRES_MAX_BLOB_BYTES, PostgresBlobStore } from '../../../src/storage/postgres-store.js';
import { createStore } from '../../../src/storage/store-factory.js';
import { freePort, type PostgresServer, startPostgres } from '../../../support/postgres.js';
import { blobStoreContract } from './contract.js';

// One database server for the file, started by the first test that needs it.
let server: Promise<PostgresServer> | undefined;
const database = () => (server ??= startPostgres());
after(async () => (await server)?.stop());

let tables = 0;
/** A table no other test has written: each store starts empty. */
const freshTable = () => `blobs_${process.pid}_${++tables}`;

const blob = (s: string) => Buffer.from(s);
const digestOf = (b: Buffer): Digest => computeDigest(SHA256, b);

async function rejectsWith(p: Promise<unknown>, code: Code, pattern?: RegExp): Promise<Error> {
  let thrown: Error | undefined;
  await assert.rejects(p, (e: unknown) => {
    assert.equal(codeOf(e), code, `expected ${Code[code]}, got ${Code[codeOf(e)]}: ${(e as Error).message}`);
    if (pattern) assert.match((e as Error).message, pattern);
    thrown = e as Error;
    return true;
  });
  return thrown!;
}

blobStoreContract('postgres', { persistent: true }, async () => {
  const { url } = await database();
  const table = freshTable();
  return {
    store: await PostgresBlobStore.open({ url, table }),
    reopen: () => PostgresBlobStore.open({ url, table }),
  };
});

describe('PostgresBlobStore', () => {
  it('serves what one store wrote to another over the same table, and a put replaces the row', async () => {
    const { url } = await database();
    const table = freshTable();
    const a = await PostgresBlobStore.open({ url, table });
    const b = await createStore({ type: 'postgres', url, table });
    try {
      const key = digestOf(blob('an action'));
      assert.deepEqual(await b.findMissing([key]), [key]);
      await a.put(key, blob('first result'));
      assert.deepEqual(await b.get(key), blob('first result'));
      assert.deepEqual(await b.findMissing([key]), []);
      // An action executed again (its result was unusable) records a new result under the same key.
      await a.put(key, blob('second, longer result'));
      assert.deepEqual(await b.get(key), blob('second, longer result'));
      assert.deepEqual(await readAll(await b.read(key, 8, 6)), blob('longer'));
      assert.equal((await database()).psql(`SELECT count(*), max(size) FROM ${table}`), '1|21');
    } finally {
      await a.close();
      await b.close?.();
    }
  });

  it('creates its default table, repr_action_results, once however many servers open it at the same time', async () => {
    const db = await database();
    const url = db.createDatabase('concurrent_open');
    const stores = await Promise.all(Array.from({ length: 8 }, () => PostgresBlobStore.open({ url })));
    try {
      const d = digestOf(blob('x'));
      await stores[0]!.put(d, blob('x'));
      assert.deepEqual(await stores[7]!.get(d), blob('x'));
      assert.equal(db.psql("SELECT count(*) FROM pg_tables WHERE tablename = 'repr_action_results'", 'concurrent_open'), '1');
    } finally {
      await Promise.all(stores.map((s) => s.close()));
    }
  });

  it('finds the missing among thousands of digests in one query', async () => {
    const { url } = await database();
    const store = await PostgresBlobStore.open({ url, table: freshTable() });
    try {
      const all = Array.from({ length: 5000 }, (_, i) => digestOf(blob(`blob ${i}`)));
      for (const d of all.filter((_, i) => i % 3 === 0)) await store.put(d, blob('present'));
      const missing = await store.findMissing(all);
      assert.deepEqual(
        missing.map((d) => d.hash),
        all.filter((_, i) => i % 3 !== 0).map((d) => d.hash),
      );
    } finally {
      await store.close();
    }
  });

  it('refuses a blob over its limit, whole or streamed, and keeps nothing of it', async () => {
    const { url } = await database();
    const store = await PostgresBlobStore.open({ url, table: freshTable() });
    const small = await PostgresBlobStore.open({ url, table: freshTable(), maxBlobBytes: 1024 });
    try {
      const huge = Buffer.alloc(DEFAULT_POSTGRES_MAX_BLOB_BYTES + 1);
      const hd = digestOf(huge);
      await rejectsWith(store.put(hd, huge), Code.RESOURCE_EXHAUSTED, /exceeds the PostgreSQL store's limit of 67108864 bytes/);
      assert.deepEqual(await store.findMissing([hd]), [hd]);

      const d = digestOf(blob('streamed'));
      const w = small.beginWrite(d);
      await w.write(Buffer.alloc(1000));
      // Refused as the bytes arrive: the writer never holds more than the limit.
      await rejectsWith(w.write(Buffer.alloc(25)), Code.RESOURCE_EXHAUSTED, /1025\+ bytes\) exceeds .* 1024 bytes/);
      assert.equal(w.written, 1000);
      await w.abort();
      assert.deepEqual(await small.findMissing([d]), [d]);
      await small.put(d, Buffer.alloc(1024));
      assert.equal((await small.get(d)).length, 1024);
    } finally {
      await store.close();
      await small.close();
    }
  });

  it('says NOT_FOUND naming the database, and never the password in the URL', async () => {
    const db = await database();
    // Trusted logins ignore the password; the URL still carries one, which no message may repeat.
    const url = db.url.replace('repr@', 'repr:hunter2@');
    const store = await PostgresBlobStore.open({ url, table: freshTable() });
    try {
      const d = digestOf(blob('never stored'));
      const e = await rejectsWith(store.get(d), Code.NOT_FOUND, new RegExp(`${d.hash}/12 not found in PostgreSQL at 127\\.0\\.0\\.1:${db.port}/repr$`));
      assert.doesNotMatch(e.message, /hunter2/);
      await rejectsWith(store.read(d, 3), Code.NOT_FOUND);
    } finally {
      await store.close();
    }
  });

  it('refuses a database it cannot reach with UNAVAILABLE at once, naming host and port but not the password', async () => {
    const port = await freePort();
    const started = performance.now();
    const e = await rejectsWith(
      PostgresBlobStore.open({ url: `postgres://repr:hunter2@127.0.0.1:${port}/repr` }),
      Code.UNAVAILABLE,
      new RegExp(`^cannot use PostgreSQL at 127\\.0\\.0\\.1:${port}/repr: .*ECONNREFUSED`),
    );
    assert.doesNotMatch(e.message, /hunter2/);
    assert.ok(performance.now() - started < 2000, `took ${Math.round(performance.now() - started)} ms`);
    // A database name that the server does not have is as unusable.
    const db = await database();
    await rejectsWith(PostgresBlobStore.open({ url: `${db.url}_nonexistent` }), Code.UNAVAILABLE, /repr_nonexistent.*does not exist/);
  });

  it('answers UNAVAILABLE once its database goes away, without the dead connections ending the process', async () => {
    const db = await startPostgres();
    const store = await PostgresBlobStore.open({ url: db.url });
    try {
      const d = digestOf(blob('kept'));
      await store.put(d, blob('kept'));
      // Idle connections die with the server: the pool's error event must not end the process.
      db.stop();
      await new Promise((r) => setTimeout(r, 100));
      await rejectsWith(store.get(d), Code.UNAVAILABLE, new RegExp(`PostgreSQL at 127\\.0\\.0\\.1:${db.port}/repr`));
      await rejectsWith(store.findMissing([d]), Code.UNAVAILABLE);
    } finally {
      await store.close();
    }
    await rejectsWith(store.get(digestOf(blob('x'))), Code.UNAVAILABLE, /closed/);
  });

  it('refuses a malformed URL or table name with INVALID_ARGUMENT', async () => {
    await rejectsWith(PostgresBlobStore.open({ url: 'mysql://u:hunter2@h/db' }), Code.INVALID_ARGUMENT, /mysql:\/\/u:\*\*\*@h\/db is not a postgres:\/\//);
    await rejectsWith(
      PostgresBlobStore.open({ url: 'postgres://h/db', table: 'x"; DROP TABLE y; --' }),
      Code.INVALID_ARGUMENT,
      /not a plain lower-case identifier/,
    );
  });
});
