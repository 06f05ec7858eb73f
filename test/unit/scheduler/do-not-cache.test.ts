import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { computeDigest, SHA256 } from '../../../src/common/digest.js';
import { Action, Command } from '../../../src/proto/build/bazel/remote/execution/v2/remote_execution.js';
import type { SubmitRequest } from '../../../src/scheduler/scheduler.js';
import { advanceUntil, finished, harness, slot, OWNER } from './harness.js';

function request(doNotCache: boolean): SubmitRequest {
  return {
    instanceName: '',
    fn: SHA256,
    // One digest for both flags: the merge must look at the flag, not rely on the digest differing.
    actionDigest: computeDigest(SHA256, Buffer.from('same action')),
    action: Action.fromPartial({ doNotCache }),
    command: Command.fromPartial({ arguments: ['x'] }),
    requirements: [],
    priority: 0,
  };
}

describe('Scheduler and do_not_cache', () => {
  it('neither joins a do_not_cache request to an in-flight execution nor lets others join it', async () => {
    const { scheduler: s, clock } = harness();
    const executed: string[] = [];
    s.addExecutor(slot('e', clock, { log: executed, workMs: 50 }));
    const cached = await s.submit(request(false), OWNER);
    const names = [cached.name, (await s.submit(request(true), OWNER)).name, (await s.submit(request(true), OWNER)).name];
    const uncachedFirst = await s.submit(request(false), OWNER);
    assert.equal(uncachedFirst.name, cached.name, 'ordinary requests still merge');
    assert.equal(new Set(names).size, 3);
    await advanceUntil(clock, finished(s, names).all);
    assert.equal(executed.length, 3);

    const alone = await s.submit(request(true), OWNER);
    const follower = await s.submit(request(false), OWNER);
    assert.notEqual(follower.name, alone.name, 'a do_not_cache execution is not joined');
    s.close();
  });
});
