import assert from 'node:assert/strict';
import { lstatSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { ManualClock } from '../../../src/common/clock.js';
import { computeDigest, fromWire, SHA256, toWire } from '../../../src/common/digest.js';
import { Code } from '../../../src/common/errors.js';
import { silentLogger } from '../../../src/common/logger.js';
import type { ExecutionTask } from '../../../src/executor/execution-task.js';
import type { RunHost } from '../../../src/executor/run-host.js';
import { Action, Command, Directory } from '../../../src/proto/build/bazel/remote/execution/v2/remote_execution.js';
import { type Node, Node_Kind, OutputChunk_Stream, type RunRequest } from '../../../src/proto/repr/run/v1/run.js';
import { BwrapSandbox } from '../../../src/sandbox/bwrap-sandbox.js';
import type { Sandbox, SandboxSpec } from '../../../src/sandbox/sandbox.js';
import { MemoryBlobStore } from '../../../src/storage/memory-store.js';
import { fuseUnavailable } from '../../../src/vfs/fuse-available.js';
import { mountsUnder } from '../../../src/vfs/fuse-mount.js';
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

/**
 * A client whose project lives at `proj` and whose files are those of
 * `disk`: two clients may claim the same path with different contents.
 */
function diskHost(cas: MemoryBlobStore, proj: string, disk: string): RunHost & { stdout: () => string } {
  const out: Buffer[] = [];
  const node = async (p: string, withDigest: boolean): Promise<Node> => {
    const empty: Node = {
      kind: Node_Kind.ABSENT,
      digest: undefined,
      size: 0,
      executable: false,
      symlinkTarget: '',
      mtimeMs: 0,
      listed: false,
      entries: [],
      mode: 0,
    };
    let st: ReturnType<typeof lstatSync>;
    try {
      st = lstatSync(p);
    } catch {
      return empty;
    }
    if (st.isDirectory()) return { ...empty, kind: Node_Kind.DIRECTORY, mtimeMs: Math.floor(st.mtimeMs) };
    const data = readFileSync(p);
    const d = computeDigest(SHA256, data);
    if (withDigest) await cas.put(d, data);
    return { ...empty, kind: Node_Kind.FILE, size: data.length, mode: 0o644, mtimeMs: Math.floor(st.mtimeMs), ...(withDigest ? { digest: toWire(d) } : {}) };
  };
  return {
    query: async (p, list) => {
      const host = path.join(disk, path.relative(proj, p));
      const n = await node(host, true);
      if (list && n.kind === Node_Kind.DIRECTORY) {
        n.listed = true;
        n.entries = await Promise.all(
          readdirSync(host)
            .sort()
            .map(async (name) => ({ name, node: await node(path.join(host, name), false) })),
        );
      }
      return n;
    },
    output: (stream, data) => {
      if (stream === OutputChunk_Stream.STDOUT) out.push(data);
    },
    stdout: () => Buffer.concat(out).toString('utf8'),
  };
}

describe('run directories made ahead', { skip: noFuse }, () => {
  it('serve one run each: a run that took one sees its own client tree, nothing the previous run read, wrote or left cached', async () => {
    const cas = new MemoryBlobStore(64 * MiB);
    const o = base(cas);
    const { slots, close } = createExecutors({
      ...o,
      sandbox: new BwrapSandbox(),
      count: 1,
      id: () => 'test/0',
      caps: { properties: {}, cpus: 1, memoryBytes: 1024 * MiB, networkAllowed: false },
    });
    try {
      const run = slots[0]!.run!;
      // Both clients call their project the same path; only the first has the secret.
      const proj = path.join(tmpDir('repr-exec-ahead-'), 'p');
      const victim = tmpDir('repr-exec-victim-');
      writeFileSync(path.join(victim, 'secret'), 'TOPSECRET\n');
      writeFileSync(path.join(victim, 'shared.txt'), 'victim\n');
      const attacker = tmpDir('repr-exec-attacker-');
      writeFileSync(path.join(attacker, 'shared.txt'), 'attacker\n');
      const request = (runId: string, script: string): RunRequest => ({
        ...emptyProject().request(runId, script),
        workingDirectory: proj,
        roots: [proj],
        mappings: [],
      });

      const first = diskHost(cas, proj, victim);
      const f1 = await run(request('victim', 'cat secret shared.txt; echo left > left.txt; ls -a'), first, new AbortController().signal);
      assert.equal(f1.status?.code ?? Code.OK, Code.OK, f1.status?.message);
      assert.match(first.stdout(), /TOPSECRET\nvictim\n/);
      // The directory made ahead for the next run: one run dir holding mounts, and not the first run's.
      const runDirs = () =>
        readdirSync(o.workDir)
          .filter((n) => n.startsWith('run-'))
          .sort();
      const deadline = Date.now() + 15_000;
      let ready: string[] = [];
      for (; Date.now() < deadline; await new Promise((r) => setTimeout(r, 50))) {
        ready = runDirs();
        if (ready.length === 1 && (await mountsUnder(path.join(o.workDir, ready[0]!))).length > 0) break;
      }
      assert.equal(ready.length, 1, `one run directory made ahead: ${ready.join(', ')}`);

      const second = diskHost(cas, proj, attacker);
      const f2 = await run(request('attacker', 'cat secret left.txt 2>&1; cat shared.txt; ls -a'), second, new AbortController().signal);
      assert.equal(f2.status?.code ?? Code.OK, Code.OK, f2.status?.message);
      const seen = second.stdout();
      assert.doesNotMatch(seen, /TOPSECRET|victim|^left$/m, `the second run saw the first's files:\n${seen}`);
      assert.match(seen, /secret: No such file/);
      assert.match(seen, /left\.txt: No such file/);
      assert.match(seen, /^attacker$/m);
      assert.deepEqual(seen.split('\n').slice(-4, -1), ['.', '..', 'shared.txt']);
      assert.ok(!runDirs().includes(ready[0]!), 'the second run took the directory made ahead, and it went with that run');
    } finally {
      await close();
    }
    assert.deepEqual(await mountsUnder(o.workDir), [], 'closing the executors removes the one made ahead');
  });
});

describe('createExecutors', () => {
  it('builds one slot per executor with its id and capabilities, each executing actions and, with FUSE, taking runs', async () => {
    const caps = { properties: { OSFamily: ['linux'] }, cpus: 2, memoryBytes: 1024 * MiB, networkAllowed: false };
    const { slots, close } = createExecutors({ ...base(new MemoryBlobStore(MiB)), sandbox: new RecordingSandbox(), count: 3, id: (i) => `w/${i}`, caps });

    assert.deepEqual(
      slots.map((s) => s.id),
      ['w/0', 'w/1', 'w/2'],
    );
    for (const s of slots) {
      assert.equal(s.caps, caps);
      assert.equal(typeof s.execute, 'function');
      assert.equal(s.run !== undefined, noFuse === undefined);
    }
    await close();
  });
});
