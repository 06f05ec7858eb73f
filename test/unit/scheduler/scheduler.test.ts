import assert from 'node:assert/strict';
import path from 'node:path';
import { describe, it } from 'node:test';
import { computeDigest, SHA256 } from '../../../src/common/digest.js';
import { silentLogger } from '../../../src/common/logger.js';
import { Action, Command, ExecuteResponse } from '../../../src/proto/build/bazel/remote/execution/v2/remote_execution.js';
import { OperationStore } from '../../../src/scheduler/operation-store.js';
import { Scheduler } from '../../../src/scheduler/scheduler.js';
import { MemoryBlobStore } from '../../../src/storage/memory-store.js';
import { tmpDir } from '../../../support/tmp.js';
import type { ExecutorSlot } from '../../../src/executor/executor-slot.js';

function scheduler() {
  const store = new OperationStore(path.join(tmpDir(), 'ops.sqlite'));
  return new Scheduler(store, new MemoryBlobStore(1 << 20), new MemoryBlobStore(1 << 20), silentLogger());
}

/** An executor that records what it ran and finishes when told to. */
function slot(id: string, properties: Record<string, string[]>, log: string[], delayMs = 20): ExecutorSlot {
  return {
    id,
    caps: { properties, cpus: 2, memoryBytes: 1 << 30, networkAllowed: false },
    execute: async (task) => {
      log.push(`${id}:${task.actionDigest.hash.slice(0, 8)}`);
      await new Promise((r) => setTimeout(r, delayMs));
      return ExecuteResponse.fromPartial({ result: { exitCode: 0 }, status: { code: 0 } });
    },
  };
}

function submitReq(i: number, requirements: { name: string; value: string }[], priority = 0) {
  return {
    instanceName: '',
    fn: SHA256,
    actionDigest: computeDigest(SHA256, Buffer.from(`action ${i}`)),
    action: Action.fromPartial({}),
    command: Command.fromPartial({ arguments: ['x'] }),
    requirements,
    priority,
  };
}

function done(s: Scheduler, name: string): Promise<void> {
  return new Promise((resolve) => s.watch(name, (st) => st.response && resolve()));
}

describe('Scheduler', () => {
  it('runs property-constrained actions only on executors that have the properties', async () => {
    const s = scheduler();
    const log: string[] = [];
    s.addExecutor(slot('small', { OSFamily: ['linux'], pool: ['small'] }, log));
    s.addExecutor(slot('big', { OSFamily: ['linux'], pool: ['big'] }, log));
    const names = [];
    for (let i = 0; i < 10; i++) names.push(s.submit(submitReq(i, [{ name: 'pool', value: 'big' }])).name);
    for (let i = 10; i < 14; i++) names.push(s.submit(submitReq(i, [{ name: 'OSFamily', value: 'linux' }])).name);
    await Promise.all(names.map((n) => done(s, n)));
    const bigOnly = log.filter((l) => l.startsWith('small')).map((l) => l.split(':')[1]);
    for (let i = 0; i < 10; i++) assert.ok(!bigOnly.includes(computeDigest(SHA256, Buffer.from(`action ${i}`)).hash.slice(0, 8)), 'pool=big never ran on small');
    assert.equal(log.length, 14);
    assert.deepEqual(s.unsatisfiable([{ name: 'pool', value: 'huge' }]), ['pool=huge']);
    assert.equal(s.unsatisfiable([{ name: 'pool', value: 'small' }]), undefined);
  });

  it('runs an identical in-flight action once for every caller', async () => {
    const s = scheduler();
    const log: string[] = [];
    s.addExecutor(slot('e', {}, log, 100));
    const a = s.submit(submitReq(1, []));
    const b = s.submit(submitReq(1, []));
    assert.equal(a.name, b.name);
    await done(s, a.name);
    assert.equal(log.length, 1);
    const c = s.submit(submitReq(1, []));
    assert.notEqual(c.name, a.name, 'once finished, the same action runs again if asked');
  });

  it('starts lower priority values first', async () => {
    const s = scheduler();
    const log: string[] = [];
    const names = [s.submit(submitReq(1, [], 5)).name, s.submit(submitReq(2, [], -5)).name, s.submit(submitReq(3, [], 0)).name];
    s.addExecutor(slot('e', {}, log, 1));
    await Promise.all(names.map((n) => done(s, n)));
    const order = [2, 3, 1].map((i) => `e:${computeDigest(SHA256, Buffer.from(`action ${i}`)).hash.slice(0, 8)}`);
    assert.deepEqual(log, order);
  });

  it('cancels a queued operation without running it', async () => {
    const s = scheduler();
    const queued = s.submit(submitReq(9, []));
    assert.equal(s.cancel(queued.name), true);
    assert.equal(s.get(queued.name)!.response!.status!.code, 1);
    const log: string[] = [];
    s.addExecutor(slot('e', {}, log));
    await new Promise((r) => setTimeout(r, 50));
    assert.deepEqual(log, []);
  });
});
