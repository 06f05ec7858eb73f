import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { ManualClock } from '../../../src/common/clock.js';
import { computeDigest, fromWire, SHA256, toWire } from '../../../src/common/digest.js';
import { Code } from '../../../src/common/errors.js';
import { silentLogger } from '../../../src/common/logger.js';
import type { ExecutionTask } from '../../../src/executor/execution-task.js';
import type { RunHost } from '../../../src/executor/run-host.js';
import { Action, Command, Directory } from '../../../src/proto/build/bazel/remote/execution/v2/remote_execution.js';
import { Node_Kind, OutputChunk_Stream, type RunRequest } from '../../../src/proto/repr/run/v1/run.js';
import { BwrapSandbox } from '../../../src/sandbox/bwrap-sandbox.js';
import type { Sandbox, SandboxSpec } from '../../../src/sandbox/sandbox.js';
import { MemoryBlobStore } from '../../../src/storage/memory-store.js';
import { fuseUnavailable } from '../../../src/vfs/fuse-available.js';
import { createExecutors } from '../../../src/worker/create-executors.js';
import { LocalExecutor } from '../../../src/worker/local-executor.js';
import { RunExecutor, type RunExecutorOptions } from '../../../src/worker/run-executor.js';
import { tmpDir } from '../../../support/tmp.js';

const MiB = 1024 * 1024;
const noFuse = fuseUnavailable();
/** Over a 64 MiB limit in one allocation; the kernel kills it. */
const OOM = 'dd if=/dev/zero of=/dev/null bs=200M count=1';

const base = (cas: MemoryBlobStore) => ({
  id: 'test/0',
  cas: () => cas,
  workDir: path.join(tmpDir('repr-exec-'), 'work'),
  log: silentLogger(),
  defaultTimeoutMs: 30_000,
  maxTimeoutMs: 60_000,
});

async function actionTask(cas: MemoryBlobStore, command: Partial<Command>, queuedAt: Date): Promise<ExecutionTask> {
  const root = Buffer.from(Directory.encode(Directory.fromPartial({})).finish());
  const rootDigest = computeDigest(SHA256, root);
  await cas.put(rootDigest, root);
  const action = Action.fromPartial({ inputRootDigest: toWire(rootDigest) });
  const actionDigest = computeDigest(SHA256, Buffer.from(Action.encode(action).finish()));
  return {
    operationName: 'op',
    instanceName: '',
    fn: SHA256,
    actionDigest,
    action,
    command: Command.fromPartial(command),
    requirements: [{ name: 'memory', value: '64MiB' }],
    queuedAt,
  };
}

/** A client whose project is an empty directory, fully mapped: no question reaches it. */
function emptyProject(): { proj: string; request: (runId: string, script: string, platform?: RunRequest['platform']) => RunRequest } {
  const proj = path.join(tmpDir('repr-exec-proj-'), 'p');
  mkdirSync(proj);
  const request = (runId: string, script: string, platform: RunRequest['platform'] = []): RunRequest => ({
    runId,
    arguments: ['/bin/sh', '-c', script],
    environmentVariables: [],
    workingDirectory: proj,
    roots: [proj],
    mappings: [
      {
        path: proj,
        node: { kind: Node_Kind.DIRECTORY, digest: undefined, size: 0, executable: false, symlinkTarget: '', mtimeMs: 0, listed: true, entries: [], mode: 0 },
      },
    ],
    instanceName: '',
    digestFunction: SHA256.value,
    platform,
    timeoutMs: 0,
  });
  return { proj, request };
}

function recordingHost(): RunHost & { stderr: () => string } {
  const err: Buffer[] = [];
  return {
    query: (p) => Promise.reject(new Error(`unexpected question for ${p}`)),
    output: (stream, data) => {
      if (stream === OutputChunk_Stream.STDERR) err.push(data);
    },
    stderr: () => Buffer.concat(err).toString('utf8'),
  };
}

describe('an action out of memory', () => {
  it('is the action failing: status OK, its own non-zero exit code, outputs collected, a message naming the limit', async () => {
    const cas = new MemoryBlobStore(256 * MiB);
    const clock = new ManualClock(1_700_000_000_000);
    const executor = new LocalExecutor({ ...base(cas), sandbox: new BwrapSandbox(), clock });
    const task = await actionTask(
      cas,
      { arguments: ['/bin/sh', '-c', `echo partial > out.txt; ${OOM}`], outputFiles: ['out.txt'] },
      new Date(clock.now() - 5000),
    );
    const r = await executor.execute(task);
    assert.equal(r.status?.code, Code.OK, r.status?.message);
    assert.notEqual(r.result?.exitCode, 0, 'never cached: the exit code is not 0');
    assert.match(r.message, /the action reached its memory limit of 67108864 bytes/);
    assert.match(r.message, /exit code \d+/);
    assert.deepEqual(
      r.result?.outputFiles.map((f) => f.path),
      ['out.txt'],
    );
    assert.equal((await cas.get(fromWire(SHA256, r.result!.outputFiles[0]!.digest))).toString(), 'partial\n');
    // Timestamps come from the injected clock.
    const meta = r.result!.executionMetadata!;
    assert.equal(Number(meta.workerStartTimestamp!.seconds), 1_700_000_000);
    assert.equal(Number(meta.queuedTimestamp!.seconds), 1_699_999_995);
  });
});

describe('a repr run out of memory', { skip: noFuse }, () => {
  it('is the command failing as for actions: status OK with the message, its exit code, the message on its stderr, changes written back', async () => {
    const cas = new MemoryBlobStore(256 * MiB);
    const executor = new RunExecutor({ ...base(cas), sandbox: new BwrapSandbox() });
    const { request } = emptyProject();
    const host = recordingHost();
    const f = await executor.run(request('oom', `echo kept > out.txt; ${OOM}`, [{ name: 'memory', value: '64MiB' }]), host, new AbortController().signal);
    assert.equal(f.status?.code ?? Code.OK, Code.OK, f.status?.message);
    assert.match(f.status!.message, /the command reached its memory limit of 67108864 bytes/);
    assert.notEqual(f.exitCode, 0);
    assert.match(host.stderr(), /^repr run: the command reached its memory limit of 67108864 bytes/m);
    assert.deepEqual(
      f.changes.map((c) => path.basename(c.path)),
      ['out.txt'],
    );
  });
});

/** Runs nothing; records what the executor asked of the sandbox. */
class RecordingSandbox implements Sandbox {
  readonly specs: SandboxSpec[] = [];
  async run(spec: SandboxSpec) {
    this.specs.push(spec);
    return { exitCode: 0, timedOut: false, oomKilled: false, wallMs: 1 };
  }
}

describe('where a run writes', { skip: noFuse }, () => {
  const runOnce = async (over: Partial<RunExecutorOptions>) => {
    const sandbox = new RecordingSandbox();
    const executor = new RunExecutor({ ...base(new MemoryBlobStore(MiB)), sandbox, ...over });
    const f = await executor.run(emptyProject().request('w', 'true'), recordingHost(), new AbortController().signal);
    assert.equal(f.status?.code ?? Code.OK, Code.OK, f.status?.message);
    return sandbox.specs[0]!;
  };

  it('is an overlay layer by default, and through FUSE when this executor was told overlays are unavailable; the choice is per executor', async () => {
    const shared = { unavailable: true };
    assert.deepEqual((await runOnce({ overlaySupport: shared })).writableDirs, [], 'through FUSE: no overlay upper layer');
    assert.deepEqual((await runOnce({ writes: 'fuse' })).writableDirs, []);
    // Another executor, not given that knowledge, still tries the overlay.
    assert.equal((await runOnce({})).writableDirs?.length, 1, 'an overlay upper layer takes the writes');
    assert.equal(shared.unavailable, true);
  });
});

describe('createExecutors', () => {
  it('builds one slot per executor with its id and capabilities, each executing actions and, with FUSE, taking runs', () => {
    const caps = { properties: { OSFamily: ['linux'] }, cpus: 2, memoryBytes: 1024 * MiB, networkAllowed: false };
    const slots = createExecutors({ ...base(new MemoryBlobStore(MiB)), sandbox: new RecordingSandbox(), count: 3, id: (i) => `w/${i}`, caps });
    assert.deepEqual(
      slots.map((s) => s.id),
      ['w/0', 'w/1', 'w/2'],
    );
    for (const s of slots) {
      assert.equal(s.caps, caps);
      assert.equal(typeof s.execute, 'function');
      assert.equal(s.run !== undefined, noFuse === undefined);
    }
  });
});
