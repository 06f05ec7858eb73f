import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { type Digest, toWire } from '../../src/common/digest.js';
import { Code } from '../../src/common/errors.js';
import type { ReapiClient } from '../../src/reapi/reapi-client.js';
import type { Observed } from '../../src/client/execution-client.js';
import { Directory } from '../../src/proto/build/bazel/remote/execution/v2/remote_execution.js';
import { useExecServer } from '../../support/servers.js';
import { putBlob, type TreeSpec, uploadRawAction } from '../../support/actions.js';

/** A chain of `levels` Directory messages, each naming the next one twice: 2^levels directories once expanded. */
async function directoryBomb(client: ReapiClient, levels: number): Promise<Digest> {
  let d = await putBlob(client, Directory.encode(Directory.fromPartial({})).finish());
  for (let i = 0; i < levels; i++) {
    d = await putBlob(
      client,
      Directory.encode(
        Directory.fromPartial({
          directories: [
            { name: 'a', digest: toWire(d) },
            { name: 'b', digest: toWire(d) },
          ],
        }),
      ).finish(),
    );
  }
  return d;
}

function nested(depth: number): TreeSpec {
  let t: TreeSpec = { leaf: 'x' };
  for (let i = 0; i < depth; i++) t = { d: t };
  return t;
}

const failure = async (p: Promise<unknown>): Promise<{ code: number; details: string }> => {
  try {
    await p;
  } catch (e) {
    return e as { code: number; details: string };
  }
  assert.fail('the call succeeded');
};

describe('hostile actions are refused with the right status, and limits hold (with positive controls)', () => {
  const ctx = useExecServer({ execution: { executors: 2, maxTimeoutSeconds: 3, maxInputNodes: 1000, maxInputBytes: 1024 * 1024, maxInputDepth: 20 } });
  const run = (
    root: TreeSpec | Digest,
    command: Parameters<typeof uploadRawAction>[1]['command'],
    action?: Parameters<typeof uploadRawAction>[1]['action'],
  ): Promise<Observed> =>
    uploadRawAction(ctx.client, { root, command, ...(action ? { action } : {}) }).then((d) => ctx.exec.execute(d, { skipCacheLookup: true }));

  it('a negative Action.timeout is INVALID_ARGUMENT, never "no timeout"', async () => {
    for (const timeout of [
      { seconds: -1, nanos: 0 },
      { seconds: 0, nanos: -5_000_000 },
      { seconds: -1e12, nanos: 0 },
    ]) {
      const e = await failure(run({}, { arguments: ['/bin/sleep', '8'] }, { timeout }));
      assert.equal(e.code, Code.INVALID_ARGUMENT, `timeout ${JSON.stringify(timeout)}: ${e.details}`);
      assert.match(e.details, /timeout/);
    }
  });

  it('a timeout above the maximum is held to the maximum', async () => {
    const t = Date.now();
    const r = await run({}, { arguments: ['/bin/sleep', '8'] }, { timeout: { seconds: 100, nanos: 0 } });
    assert.equal(r.response!.status!.code, Code.DEADLINE_EXCEEDED);
    assert.ok(Date.now() - t < 7000, 'killed at the 3 s maximum');
  });

  it('Execute of a digest that is not an Action is INVALID_ARGUMENT; an input child that is not a Directory is FAILED_PRECONDITION', async () => {
    const junk = await putBlob(ctx.client, Buffer.from([0xff, 0xff, 0xff, 0xff]));
    const e = await failure(ctx.exec.execute(junk));
    assert.equal(e.code, Code.INVALID_ARGUMENT, e.details);
    assert.match(e.details, /not a valid Action/);

    const root = await putBlob(ctx.client, Directory.encode(Directory.fromPartial({ directories: [{ name: 'x', digest: toWire(junk) }] })).finish());
    const r = await run(root, { arguments: ['/bin/true'] });
    assert.equal(r.response!.status!.code, Code.FAILED_PRECONDITION, r.response!.status!.message);
    assert.match(r.response!.status!.message, /not a Directory/);
  });

  it('paths in the Command that leave the input root are INVALID_ARGUMENT at Execute', async () => {
    for (const command of [{ outputFiles: ['/etc/passwd'] }, { outputDirectories: ['../up'] }, { outputPaths: ['a/../../b'] }, { workingDirectory: '/tmp' }]) {
      const e = await failure(run({}, { arguments: ['/bin/true'], ...command }));
      assert.equal(e.code, Code.INVALID_ARGUMENT, `${JSON.stringify(command)}: ${e.details}`);
    }
  });

  it('an input tree that expands past maxInputNodes is refused before staging, naming the limit; one just under runs', async () => {
    const t = Date.now();
    const bomb = await run(await directoryBomb(ctx.client, 18), { arguments: ['/bin/true'] });
    assert.equal(bomb.response!.status!.code, Code.FAILED_PRECONDITION);
    assert.match(bomb.response!.status!.message, /maxInputNodes/);
    assert.ok(Date.now() - t < 5000, 'refused quickly');

    // 2^9 - 1 + 2^9 = 1023 directories: over 1000; 2^8 levels is 511: under.
    assert.equal((await run(await directoryBomb(ctx.client, 9), { arguments: ['/bin/true'] })).response!.status!.code, Code.FAILED_PRECONDITION);
    const ok = await run(await directoryBomb(ctx.client, 8), { arguments: ['/bin/sh', '-c', 'test -d a/b/a/b/a/b/a/b'] });
    assert.equal(ok.response!.status?.code ?? 0, Code.OK, ok.response!.status?.message);
    assert.equal(ok.response!.result!.exitCode, 0);
  });

  it('maxInputBytes and maxInputDepth hold, with positive controls', async () => {
    const big = await run({ f: 'x'.repeat(1024 * 1024 + 1) }, { arguments: ['/bin/true'] });
    assert.match(big.response!.status!.message, /maxInputBytes/);
    const fits = await run({ f: 'x'.repeat(1024 * 1024) }, { arguments: ['/bin/true'] });
    assert.equal(fits.response!.status?.code ?? 0, Code.OK);

    const deep = await run(nested(21), { arguments: ['/bin/true'] });
    assert.equal(deep.response!.status!.code, Code.FAILED_PRECONDITION);
    assert.match(deep.response!.status!.message, /maxInputDepth/);
    const shallow = await run(nested(20), { arguments: ['/bin/true'] });
    assert.equal(shallow.response!.status?.code ?? 0, Code.OK, shallow.response!.status?.message);
  });
});

describe('the action timeout covers staging', () => {
  const ctx = useExecServer({ execution: { executors: 1 } });

  it('a 2^17-directory input root (under the default limits) is stopped at a 1 s timeout, and the executor is free again', async () => {
    const levels = 17;
    const d = await directoryBomb(ctx.client, levels);
    const t = Date.now();
    const r = await ctx.exec.execute(
      await uploadRawAction(ctx.client, { root: d, command: { arguments: ['/bin/true'] }, action: { timeout: { seconds: 1, nanos: 0 } } }),
    );
    assert.equal(r.response!.status!.code, Code.DEADLINE_EXCEEDED, r.response!.status!.message);
    assert.match(r.response!.status!.message, /staged/);
    assert.ok(Date.now() - t < 15_000, `stopped soon after the timeout (${Date.now() - t} ms)`);
    const next = await ctx.exec.execute(await uploadRawAction(ctx.client, { root: {}, command: { arguments: ['/bin/true'] } }));
    assert.equal(next.response!.status?.code ?? 0, Code.OK);
  });
});

describe("the sandbox's caps fail an action with a message naming the cap (positive controls just under)", () => {
  const MiB = 1024 * 1024;
  const ctx = useExecServer({ execution: { executors: 2, sandbox: { maxWriteBytes: 8 * MiB, maxStdoutBytes: MiB } } });
  const run = async (script: string, outputFiles: string[] = []) =>
    (await ctx.exec.execute(await uploadRawAction(ctx.client, { root: {}, command: { arguments: ['/bin/sh', '-c', script], outputFiles } }))).response!;

  it('bytes written in the action directory', async () => {
    const over = await run('head -c 12000000 /dev/zero > big; sleep 5', ['big']);
    assert.equal(over.status!.code, Code.FAILED_PRECONDITION, over.status!.message);
    assert.match(over.status!.message, /write/);
    assert.deepEqual(over.result!.outputFiles, [], 'nothing collected from an action over a cap');
    const under = await run('head -c 6000000 /dev/zero > big', ['big']);
    assert.equal(under.status?.code ?? 0, Code.OK, under.status?.message);
    assert.equal(under.result!.outputFiles[0]!.digest!.sizeBytes, 6_000_000);
    // Not cached: the same action fails again rather than answering from the cache.
    const again = await run('head -c 12000000 /dev/zero > big; sleep 5', ['big']);
    assert.equal(again.cachedResult, false);
  });

  it('stdout', async () => {
    const over = await run(`head -c ${MiB + 1} /dev/zero`);
    assert.equal(over.status!.code, Code.FAILED_PRECONDITION, over.status!.message);
    assert.match(over.status!.message, /stdout/);
    const under = await run(`head -c ${MiB} /dev/zero`);
    assert.equal(under.status?.code ?? 0, Code.OK, under.status?.message);
    assert.equal(under.result!.stdoutDigest!.sizeBytes, MiB);
  });
});
