import assert from 'node:assert/strict';
import path from 'node:path';
import Database from 'better-sqlite3';
import { describe, it } from 'node:test';
import { instanceOfCollection, instanceOfOperation, newOperationName } from '../../../src/scheduler/operation-name.js';
import { OperationStore } from '../../../src/scheduler/operation-store.js';
import { tmpDir } from '../../../support/tmp.js';

describe('operation names', () => {
  it('carry their instance, and only canonical names map back to one', () => {
    for (const instance of ['', 'a', 'projects/x/instances/default', 'operations']) {
      const name = newOperationName(instance);
      assert.equal(instanceOfOperation(name), instance, name);
      assert.equal(instanceOfCollection(name.slice(0, name.lastIndexOf('/'))), instance);
    }
    assert.match(newOperationName(''), /^operations\/[0-9a-f-]{36}$/);
    assert.match(newOperationName('a'), /^a\/operations\/[0-9a-f-]{36}$/);
    for (const bad of ['', 'x', 'operations', 'operations/', '/operations/x', 'b/x', 'a/operations/']) {
      assert.equal(instanceOfOperation(bad), undefined, bad);
    }
    assert.equal(instanceOfCollection(''), '');
    assert.equal(instanceOfCollection('operations'), '');
    assert.equal(instanceOfCollection('a/operations'), 'a');
    assert.equal(instanceOfCollection('a'), 'a');
  });

  it('renames operations stored under the old unscoped names, once', () => {
    const file = path.join(tmpDir(), 'ops.sqlite');
    const row = (name: string, instanceName: string) => ({
      name,
      instanceName,
      digestFunction: 1,
      actionHash: 'h',
      actionSize: 1,
      stage: 4,
      priority: 0,
      requirements: '[]',
      response: null,
      createdMs: 1,
      updatedMs: 1,
    });
    // Rows as a server before scoped names left them.
    const old = new OperationStore(file);
    old.close();
    const raw = new Database(file);
    raw.pragma('user_version = 0');
    const insert = raw.prepare(
      `INSERT INTO operations VALUES (@name, @instanceName, @digestFunction, @actionHash, @actionSize, @stage, @priority, @requirements, @response, @createdMs, @updatedMs)`,
    );
    insert.run(row('operations/1', ''));
    insert.run(row('operations/2', 'a'));
    insert.run(row('operations/operations/3', 'operations'));
    raw.close();

    const store = new OperationStore(file);
    try {
      assert.deepEqual(
        store.list('', '', 10).map((r) => r.name),
        ['operations/1'],
      );
      assert.deepEqual(
        store.list('a', '', 10).map((r) => r.name),
        ['a/operations/2'],
      );
      assert.equal(store.get('operations/2'), undefined);
      assert.deepEqual(
        store.list('operations', '', 10).map((r) => r.name),
        ['operations/operations/3'],
        'already scoped: left alone',
      );
    } finally {
      store.close();
    }
  });
});
