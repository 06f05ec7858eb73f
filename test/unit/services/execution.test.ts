import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { computeDigest, fromWire, SHA256 } from '../../../src/common/digest.js';
import { Code } from '../../../src/common/errors.js';
import { ReapiClient } from '../../../src/reapi/reapi-client.js';
import { ExecutionStage_Value } from '../../../src/proto/build/bazel/remote/execution/v2/remote_execution.js';
import type { ReprServer } from '../../../src/server/server.js';
import { ExecClient, uploadAction } from '../../../src/client/execution-client.js';
import { startInProcess, startServerProcess } from '../../../support/servers.js';
import { tmpDir } from '../../../support/tmp.js';

describe('Execution service', () => {
  let server: ReprServer;
  let client: ReapiClient;
  let exec: ExecClient;

  before(async () => {
    server = await startInProcess({ dataDir: tmpDir(), execution: { executors: 2, properties: { OSFamily: 'linux', pool: 'default' } } });
    client = new ReapiClient({ target: server.address });
    exec = new ExecClient(server.address);
  });
  after(async () => {
    client.close();
    exec.close();
    await server.stop();
  });

  it('runs an action in the sandbox, returns its outputs and logs, and caches the result', async () => {
    const action = await uploadAction(client, {
      argv: ['/bin/sh', '-c', 'cat in.txt > out.txt; echo done; echo warn >&2'],
      inputs: { 'in.txt': 'input content\n' },
      outputFiles: ['out.txt'],
    });
    const first = await exec.execute(action);
    assert.equal(first.stages.at(-1), ExecutionStage_Value.COMPLETED);
    assert.ok(first.stages.includes(ExecutionStage_Value.QUEUED) || first.stages.includes(ExecutionStage_Value.EXECUTING));
    const res = first.response!;
    assert.equal(res.status?.code ?? 0, Code.OK);
    assert.equal(res.cachedResult, false);
    assert.equal(res.result!.exitCode, 0);
    const out = res.result!.outputFiles.find((f) => f.path === 'out.txt')!;
    assert.deepEqual(await client.read(fromWire(SHA256, out.digest)), Buffer.from('input content\n'));
    assert.deepEqual(await client.read(fromWire(SHA256, res.result!.stdoutDigest)), Buffer.from('done\n'));
    assert.deepEqual(await client.read(fromWire(SHA256, res.result!.stderrDigest)), Buffer.from('warn\n'));
    const meta = res.result!.executionMetadata!;
    assert.match(meta.worker, /local-\d/);
    for (const k of [
      'queuedTimestamp',
      'workerStartTimestamp',
      'inputFetchStartTimestamp',
      'executionStartTimestamp',
      'executionCompletedTimestamp',
      'outputUploadCompletedTimestamp',
    ] as const) {
      assert.ok(meta[k], `${k} is set`);
    }

    const second = await exec.execute(action);
    assert.equal(second.response!.cachedResult, true);
    assert.deepEqual(second.response!.result!.outputFiles, res.result!.outputFiles);
    const forced = await exec.execute(action, { skipCacheLookup: true });
    assert.equal(forced.response!.cachedResult, false);
  });

  it('does not cache failures or do_not_cache actions, and says why an action failed', async () => {
    const failing = await uploadAction(client, { argv: ['/bin/sh', '-c', 'echo oops >&2; exit 7'] });
    const r = await exec.execute(failing);
    assert.equal(r.response!.result!.exitCode, 7);
    assert.match(r.response!.message, /exited with code 7/);
    assert.equal((await exec.execute(failing)).response!.cachedResult, false);

    const uncached = await uploadAction(client, { argv: ['/bin/true'], doNotCache: true });
    await exec.execute(uncached);
    assert.equal((await exec.execute(uncached)).response!.cachedResult, false);
  });

  it('reports DEADLINE_EXCEEDED with the partial output when the action times out', async () => {
    const slow = await uploadAction(client, { argv: ['/bin/sh', '-c', 'echo started; sleep 30'], timeoutSeconds: 1 });
    const t = Date.now();
    const r = await exec.execute(slow);
    assert.ok(Date.now() - t < 10_000);
    assert.equal(r.response!.status!.code, Code.DEADLINE_EXCEEDED);
    assert.deepEqual(await client.read(fromWire(SHA256, r.response!.result!.stdoutDigest)), Buffer.from('started\n'));
  });

  it('fails fast with FAILED_PRECONDITION naming the properties no executor has', async () => {
    const action = await uploadAction(client, { argv: ['/bin/true'], platform: { OSFamily: 'linux', pool: 'gpu', cpu: '64' } });
    await assert.rejects(exec.execute(action), (e: Error & { code?: number; details?: string }) => {
      assert.equal(e.code, Code.FAILED_PRECONDITION);
      assert.match(e.details!, /pool=gpu/);
      assert.match(e.details!, /cpu=64/);
      return true;
    });
  });

  it('FAILED_PRECONDITION with the missing blobs when the action is not uploaded', async () => {
    await assert.rejects(
      exec.execute(computeDigest(SHA256, Buffer.from('never uploaded action'))),
      (e: Error & { code?: number; details?: string; metadata?: { get(k: string): unknown[] } }) => {
        assert.equal(e.code, Code.FAILED_PRECONDITION);
        assert.match(e.details!, /not in the CAS/);
        assert.equal(e.metadata!.get('grpc-status-details-bin').length, 1, 'carries a PreconditionFailure');
        return true;
      },
    );
  });

  it('runs identical in-flight actions once: concurrent callers share one operation', async () => {
    const action = await uploadAction(client, { argv: ['/bin/sh', '-c', 'sleep 1; date +%s%N'], salt: 'dedup' });
    const [a, b, c] = await Promise.all([exec.execute(action), exec.execute(action), exec.execute(action)]);
    assert.equal(a.name, b.name);
    assert.equal(b.name, c.name);
    assert.deepEqual(a.response!.result!.stdoutDigest, c.response!.result!.stdoutDigest);
  });

  it('cancels a running operation', async () => {
    const action = await uploadAction(client, { argv: ['/bin/sleep', '30'], salt: 'cancel' });
    const t = Date.now();
    const r = await exec.execute(action, {
      onFirst: (name) => void setTimeout(() => void exec.cancelOperation(name), 300),
    });
    assert.equal(r.response!.status!.code, Code.CANCELLED);
    assert.ok(Date.now() - t < 10_000);
    const op = await exec.getOperation(r.name);
    assert.equal(op.done, true);
  });

  it('lists operations page by page', async () => {
    const first = await exec.listOperations(2);
    assert.equal(first.operations.length, 2);
    assert.notEqual(first.nextPageToken, '');
    const second = await exec.listOperations(2, first.nextPageToken);
    assert.ok(second.operations.every((o) => !first.operations.some((f) => f.name === o.name)));
  });
});

describe('operations across a server restart', () => {
  it('answers for finished operations and finishes unfinished ones after a crash', async () => {
    const dataDir = tmpDir('repr-data-');
    let server = await startServerProcess(['--data-dir', dataDir, '--executors', '1']);
    let client = new ReapiClient({ target: server.address });
    let exec = new ExecClient(server.address);
    const quick = await uploadAction(client, { argv: ['/bin/sh', '-c', 'echo quick'] });
    const done = await exec.execute(quick);
    const slow = await uploadAction(client, { argv: ['/bin/sh', '-c', 'sleep 2; echo slow'] });
    let slowName = '';
    const pending = exec.execute(slow, { onFirst: (n) => (slowName = n) }).catch(() => undefined);
    while (!slowName) await new Promise((r) => setTimeout(r, 50));
    await server.stop('SIGKILL'); // a crash: the slow action never finished here
    await pending;
    client.close();
    exec.close();

    server = await startServerProcess(['--data-dir', dataDir, '--executors', '1']);
    client = new ReapiClient({ target: server.address });
    exec = new ExecClient(server.address);
    try {
      const op = await exec.getOperation(done.name);
      assert.equal(op.done, true);
      const resumed = await exec.waitExecution(slowName);
      assert.equal(resumed.response!.result!.exitCode, 0);
      assert.deepEqual(await client.read(fromWire(SHA256, resumed.response!.result!.stdoutDigest)), Buffer.from('slow\n'));
      await assert.rejects(exec.waitExecution('operations/unknown'), (e: Error & { code?: number }) => e.code === Code.NOT_FOUND);
    } finally {
      client.close();
      exec.close();
      await server.stop();
    }
  });
});
