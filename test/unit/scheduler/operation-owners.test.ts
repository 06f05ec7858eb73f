import assert from 'node:assert/strict';
import path from 'node:path';
import { describe, it } from 'node:test';
import { ManualClock } from '../../../src/common/clock.js';
import { silentLogger } from '../../../src/common/logger.js';
import { ExecuteResponse } from '../../../src/proto/build/bazel/remote/execution/v2/remote_execution.js';
import { OperationBook } from '../../../src/scheduler/operation-book.js';
import { OperationStore } from '../../../src/scheduler/operation-store.js';
import { MemoryBlobStore } from '../../../src/storage/memory-store.js';
import { tmpDir } from '../../../support/tmp.js';
import { computeDigest, SHA256, toWire } from '../../../src/common/digest.js';
import { Action, Command } from '../../../src/proto/build/bazel/remote/execution/v2/remote_execution.js';
import type { SubmitRequest } from '../../../src/scheduler/operation-book.js';
import { actionDigest } from './harness.js';

/** An action whose Action and Command are real blobs, so that a restarted book can read them back. */
function stored(i: number): { req: SubmitRequest; blobs: Buffer[] } {
  const command = Buffer.from(Command.encode(Command.fromPartial({ arguments: ['echo', String(i)] })).finish());
  const action = Buffer.from(Action.encode(Action.fromPartial({ commandDigest: toWire(computeDigest(SHA256, command)) })).finish());
  return {
    req: {
      instanceName: '',
      fn: SHA256,
      actionDigest: computeDigest(SHA256, action),
      action: Action.decode(action),
      command: Command.decode(command),
      requirements: [],
      priority: 0,
    },
    blobs: [command, action],
  };
}

async function casWith(reqs: { blobs: Buffer[] }[]): Promise<MemoryBlobStore> {
  const cas = new MemoryBlobStore(1 << 20);
  for (const r of reqs) for (const b of r.blobs) await cas.put(computeDigest(SHA256, b), b);
  return cas;
}

const submitReq = (i: number) => stored(i).req;

describe('operation owners', () => {
  it('records who started and who joined an operation, lists by owner, and keeps both across a restart', async () => {
    const file = path.join(tmpDir(), 'operations.sqlite');
    const clock = new ManualClock(0);
    const store = new OperationStore(file, clock);
    const book = new OperationBook(store, clock, silentLogger());
    const { op } = book.open(submitReq(1), 'alice');
    const joined = book.open(submitReq(1), 'bob');
    assert.equal(joined.fresh, false);
    assert.equal(joined.op, op);
    book.open(submitReq(1), 'alice'); // joining twice changes nothing
    const other = book.open(submitReq(2), 'carol').op;
    const hit = book.recordCompleted('', actionDigest(3), ExecuteResponse.fromPartial({}), 'alice');

    assert.deepEqual([...book.owners(op.state.name)].sort(), ['alice', 'bob']);
    assert.deepEqual(book.owners(hit.name), ['alice']);
    assert.deepEqual(book.owners('operations/unknown'), []);
    const names = (owner?: string) => book.list('', '', 100, owner).map((s) => s.name);
    assert.deepEqual(names('alice').sort(), [op.state.name, hit.name].sort());
    assert.deepEqual(names('carol'), [other.state.name]);
    assert.deepEqual(names('mallory'), []);
    assert.equal(names().length, 3);
    store.close();

    // A restarted server re-queues the unfinished ones; whoever owned them still does.
    const again = new OperationBook(new OperationStore(file, clock), clock, silentLogger());
    assert.deepEqual([...again.owners(op.state.name)].sort(), ['alice', 'bob'], 'read from the store');
    const requeued: string[] = [];
    await again.recover(await casWith([stored(1), stored(2)]), (o) => requeued.push(o.state.name));
    assert.deepEqual(requeued.sort(), [op.state.name, other.state.name].sort());
    assert.deepEqual([...again.owners(op.state.name)].sort(), ['alice', 'bob'], 'and from the live operation');
    // Joining after the restart adds to them.
    assert.equal(again.open(submitReq(2), 'dave').fresh, false);
    assert.deepEqual([...again.owners(other.state.name)].sort(), ['carol', 'dave']);
    assert.ok(again.delete(hit.name));
    assert.deepEqual(again.owners(hit.name), [], 'deleting an operation forgets its owners');
  });
});
