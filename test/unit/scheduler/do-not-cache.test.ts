import assert from 'node:assert/strict';
import path from 'node:path';
import { describe, it } from 'node:test';
import { computeDigest, SHA256 } from '../../../src/common/digest.js';
import { silentLogger } from '../../../src/common/logger.js';
import { Action, Command, ExecuteResponse } from '../../../src/proto/build/bazel/remote/execution/v2/remote_execution.js';
import { OperationStore } from '../../../src/scheduler/operation-store.js';
import { Scheduler, type SubmitRequest } from '../../../src/scheduler/scheduler.js';
import { MemoryBlobStore } from '../../../src/storage/memory-store.js';
import { tmpDir } from '../../../support/tmp.js';

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
    const s = new Scheduler(new OperationStore(path.join(tmpDir(), 'ops.sqlite')), new MemoryBlobStore(1 << 20), new MemoryBlobStore(1 << 20), silentLogger());
    let runs = 0;
    s.addExecutor({
      id: 'e',
      caps: { properties: {}, cpus: 1, memoryBytes: 1 << 30, networkAllowed: false },
      execute: async () => {
        runs++;
        await new Promise((r) => setTimeout(r, 50));
        return ExecuteResponse.fromPartial({ result: { exitCode: 0 }, status: { code: 0 } });
      },
    });
    const cached = s.submit(request(false));
    const names = [cached.name, s.submit(request(true)).name, s.submit(request(true)).name];
    const uncachedFirst = s.submit(request(false));
    assert.equal(uncachedFirst.name, cached.name, 'ordinary requests still merge');
    assert.equal(new Set(names).size, 3);
    await Promise.all(names.map((n) => new Promise<void>((resolve) => s.watch(n, (st) => st.response && resolve()))));
    assert.equal(runs, 3);

    const alone = s.submit(request(true));
    const follower = s.submit(request(false));
    assert.notEqual(follower.name, alone.name, 'a do_not_cache execution is not joined');
    s.close();
  });
});
