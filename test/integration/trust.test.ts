import assert from 'node:assert/strict';
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { after, before, describe, it } from 'node:test';
import { computeDigest, type Digest, SHA256 } from '../../src/common/digest.js';
import { Code } from '../../src/common/errors.js';
import { ExecClient, uploadAction } from '../../src/client/execution-client.js';
import { fetchStatus } from '../../src/client/status-client.js';
import { ActionResult } from '../../src/proto/build/bazel/remote/execution/v2/remote_execution.js';
import { ReapiClient } from '../../src/reapi/reapi-client.js';
import { REPR_BIN } from '../../support/spawn-server.js';
import { type ServerProcess, spawnWorker, startServerProcess, type WorkerProcess } from '../../support/servers.js';
import { tmpDir } from '../../support/tmp.js';

const T = {
  dev: 'dev-token-0123456789abcdef',
  ci: 'ci-token-0123456789abcdef',
  worker: 'worker-token-0123456789abc',
  mallory: 'mallory-token-0123456789ab',
  admin: 'admin-token-0123456789abcd',
  reader: 'reader-token-0123456789abc',
  runner: 'runner-token-0123456789abc',
  scoped: 'scoped-token-0123456789abc',
};

/** A call's refusal: its code, and a message naming what was missing. */
const denied = (code: Code, message: RegExp) => (e: unknown) => {
  const err = e as { code?: number; details?: string; message: string };
  assert.equal(err.code, code, err.message);
  assert.match(err.details ?? err.message, message);
  return true;
};
const lacks = (permission: string) => denied(Code.PERMISSION_DENIED, new RegExp(`lacks ${permission}\\b`));

/**
 * The trust issue, end to end, on a real `repr server` process with token
 * authentication and real `repr worker` processes: an attacker holding a
 * developer's token tries what an attacker did before roles existed (register
 * as a worker to be handed other people's work, write fabricated results into
 * the action cache, watch other people's operations) and is refused each time,
 * while every role can still do its own job.
 */
describe('trust: roles for every principal, no cache poisoning', () => {
  let server: ServerProcess;
  let good: WorkerProcess;
  let dir: string;
  const clients: { close(): void }[] = [];
  const spawned: ChildProcess[] = [];

  const cas = (token: string, instanceName = '') => {
    const c = new ReapiClient({ target: server.url, token, instanceName });
    clients.push(c);
    return c;
  };
  const exec = (token: string, instanceName = '') => {
    const c = new ExecClient(server.url, instanceName, { token });
    clients.push(c);
    return c;
  };
  const repr = (args: string[], cwd = dir) =>
    spawnSync(process.execPath, [REPR_BIN, ...args], {
      cwd,
      encoding: 'utf8',
      env: { ...process.env, REPR_TOKEN: '', REPR_RUN_RECORDS: tmpDir('repr-trust-rec-') },
      timeout: 60_000,
    });

  let action: Digest;

  before(async () => {
    dir = tmpDir('repr-trust-');
    const tokens = path.join(dir, 'tokens');
    writeFileSync(
      tokens,
      [
        `dev:${T.dev} developer`,
        `ci:${T.ci} ci`,
        `worker:${T.worker} worker`,
        `mallory:${T.mallory} developer`,
        // admin and the others get their roles from grants instead.
        `admin:${T.admin}`,
        `reader:${T.reader}`,
        `runner:${T.runner} runner`,
        `scoped:${T.scoped}`,
        '',
      ].join('\n'),
    );
    const config = path.join(dir, 'server.json');
    writeFileSync(
      config,
      JSON.stringify({
        execution: { executors: 0 },
        auth: {
          tokensFile: tokens,
          roles: { runner: ['run'] },
          principals: [{ name: 'scoped', roles: ['developer'], instances: ['a'] }],
        },
      }),
    );
    server = await startServerProcess([
      '--config',
      config,
      '--data-dir',
      path.join(dir, 'data'),
      '--auth-grant',
      'admin=admin',
      '--auth-grant',
      'read*=reader',
    ]);
    good = await spawnWorker(server.url, ['--name', 'good', '--token', T.worker, '--executors', '2', '--data-dir', tmpDir('repr-trust-good-')]);
    action = await uploadAction(cas(T.dev), { argv: ['/bin/sh', '-c', 'echo built > out.txt'], outputFiles: ['out.txt'] });
  });

  after(async () => {
    for (const c of clients) c.close();
    for (const c of spawned) c.kill('SIGKILL');
    await good?.stop('SIGKILL');
    await server?.stop();
  });

  it('an attacker with a developer token cannot register as a worker, so no work is handed to it', async () => {
    const evil = spawn(
      process.execPath,
      [REPR_BIN, 'worker', '--scheduler', server.url, '--name', 'good', '--token', T.mallory, '--data-dir', tmpDir('repr-evil-')],
      {
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    spawned.push(evil);
    const reason = await new Promise<string>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('the refused worker never said why')), 30_000);
      createInterface({ input: evil.stdout! }).on('line', (line) => {
        if (/refused this worker's credentials/.test(line)) {
          clearTimeout(timer);
          resolve(line);
        }
        if (/registered with the scheduler/.test(line)) reject(new Error(`the attacker registered: ${line}`));
      });
    });
    assert.match(reason, /PERMISSION_DENIED/);
    assert.match(reason, /needs the worker role/, 'the refused worker says what to do');
    assert.match(reason, /principal \\"mallory\\" lacks worker \(Connect, on every instance\)/);
    evil.kill('SIGKILL');

    // Only the real worker is there, under its own principal; the attacker took neither its place nor its name.
    const status = await fetchStatus(server.url, 10_000, { token: T.admin });
    assert.deepEqual(
      status.workers.map((w) => [w.name, w.principal]),
      [['good', 'worker']],
    );
    const cli = repr(['status', '--server', server.url, '--token', T.admin]);
    assert.equal(cli.status, 0, cli.stderr);
    assert.match(cli.stdout, /^good +127\.0\.0\.1:\d+ +worker +2 /m);
    // The refusal is in the server's log once per attempt, with who, what and from where.
    const refusals = server.logs
      .filter((l) => l.includes('call refused'))
      .map((l) => JSON.parse(l) as Record<string, unknown>)
      .filter((r) => r.principal === 'mallory');
    assert.ok(refusals.length >= 1);
    assert.equal(refusals[0]!.method, '/repr.worker.v1.Workers/Connect');
    assert.equal(refusals[0]!.level, 40);
    assert.match(String(refusals[0]!.peer), /127\.0\.0\.1/);
  });

  it('a developer cannot write the action cache, but what it executes remotely lands there', async () => {
    const fabricated = ActionResult.fromPartial({ exitCode: 0, stdoutRaw: Buffer.from('pwned') });
    await assert.rejects(
      cas(T.mallory).updateActionResult(action, fabricated),
      denied(Code.PERMISSION_DENIED, /^principal "mallory" lacks ac-write \(UpdateActionResult, on any instance\)$/),
    );
    await assert.rejects(cas(T.dev).getActionResult(action), denied(Code.NOT_FOUND, /./), 'nothing was written');

    const run = await exec(T.dev).execute(action);
    assert.equal(run.response?.status?.code ?? 0, Code.OK, run.response?.status?.message);
    assert.match(run.response!.result!.executionMetadata!.worker, /^good\//);
    // Written by the scheduler, from a worker holding the worker permission.
    const cached = await cas(T.dev).getActionResult(action);
    assert.equal(cached.exitCode, 0);
    assert.equal(cached.outputFiles[0]?.path, 'out.txt');
    // ci may write it directly.
    const other = computeDigest(SHA256, Buffer.from('another action'));
    await cas(T.ci).updateActionResult(other, ActionResult.fromPartial({ exitCode: 0 }));
  });

  it('a worker principal can do nothing but work: no action-cache reads, no Execute', async () => {
    await assert.rejects(cas(T.worker).getActionResult(action), lacks('ac-read'));
    await assert.rejects(exec(T.worker).execute(action), lacks('execute'));
  });

  it('every permission opens its calls to those who hold it and to nobody else', async () => {
    const blob = Buffer.from('matrix blob');
    const d = computeDigest(SHA256, blob);
    // cas-write: Write; the reader may not.
    await cas(T.dev).write(d, blob);
    await assert.rejects(cas(T.reader).write(d, blob), lacks('cas-write'));
    // cas-read: Read; a principal whose only role is "runner" may not.
    assert.equal((await cas(T.reader).read(d)).toString(), 'matrix blob');
    await assert.rejects(cas(T.runner).read(d), lacks('cas-read'));
    // ac-read: GetActionResult; the worker may not (above), the runner neither.
    assert.equal((await cas(T.reader).getActionResult(action)).exitCode, 0);
    await assert.rejects(cas(T.runner).getActionResult(action), lacks('ac-read'));
    // ac-write: UpdateActionResult; ci may, a developer may not.
    await cas(T.ci).updateActionResult(computeDigest(SHA256, Buffer.from('ci result')), ActionResult.fromPartial({ exitCode: 0 }));
    await assert.rejects(
      cas(T.dev).updateActionResult(computeDigest(SHA256, Buffer.from('dev result')), ActionResult.fromPartial({ exitCode: 0 })),
      lacks('ac-write'),
    );
    // execute: Execute; the reader may not.
    assert.equal((await exec(T.ci).execute(action)).response!.cachedResult, true);
    await assert.rejects(exec(T.reader).execute(action), lacks('execute'));
    // run: a `repr run` on the worker; the reader may not.
    const proj = path.join(dir, 'proj');
    mkdirSync(proj, { recursive: true });
    writeFileSync(path.join(proj, 'in.txt'), 'run me\n');
    const ran = repr(['run', '--server', server.url, '--token', T.dev, '--', 'cat', 'in.txt'], proj);
    assert.equal(ran.status, 0, ran.stderr);
    assert.equal(ran.stdout, 'run me\n');
    const refusedRun = repr(['run', '--server', server.url, '--token', T.reader, '--', 'cat', 'in.txt'], proj);
    assert.equal(refusedRun.status, 125);
    assert.match(refusedRun.stderr, /lacks run/);
    // worker: shown above (the real worker is registered, mallory is refused).
    // admin: `repr status`; a developer may not.
    assert.equal((await fetchStatus(server.url, 10_000, { token: T.admin })).workers.length, 1);
    await assert.rejects(fetchStatus(server.url, 10_000, { token: T.dev }), lacks('admin'));
  });

  it('a grant limited to instance "a" allows "a" and refuses "b", naming the instance', async () => {
    const blob = Buffer.from('scoped blob');
    const d = computeDigest(SHA256, blob);
    await cas(T.scoped, 'a').write(d, blob);
    assert.deepEqual(await cas(T.scoped, 'a').findMissing([d]), []);
    await assert.rejects(
      cas(T.scoped, 'b').findMissing([d]),
      denied(Code.PERMISSION_DENIED, /^principal "scoped" lacks cas-read or cas-write \(FindMissingBlobs, instance "b"\)$/),
    );
    await assert.rejects(cas(T.scoped, 'b').write(d, blob), denied(Code.PERMISSION_DENIED, /lacks cas-write \(Write, instance "b"\)/));
    const line = server.logs.find((l) => l.includes('call refused') && l.includes('"instance":"b"'));
    assert.ok(line, 'the denial is logged with its instance');
    const rec = JSON.parse(line) as Record<string, unknown>;
    assert.equal(rec.principal, 'scoped');
  });

  it('operations belong to those who started or joined them: another developer cannot watch, read or cancel one; an admin can', async () => {
    const own = await uploadAction(cas(T.dev), { argv: ['/bin/true'], salt: 'ownership' });
    const started = await exec(T.dev).execute(own);
    const name = started.name;
    assert.ok(name);
    const notOwner = denied(Code.PERMISSION_DENIED, new RegExp(`^principal "mallory" does not own operation "${name}" and lacks admin`));
    await assert.rejects(exec(T.mallory).waitExecution(name), notOwner);
    await assert.rejects(exec(T.mallory).getOperation(name), notOwner);
    await assert.rejects(exec(T.mallory).cancelOperation(name), notOwner);
    assert.deepEqual(
      (await exec(T.mallory).listOperations(100)).operations.map((o) => o.name),
      [],
      'mallory lists only her own operations',
    );
    assert.ok((await exec(T.dev).listOperations(100)).operations.some((o) => o.name === name));
    assert.equal((await exec(T.dev).getOperation(name)).name, name);
    assert.equal((await exec(T.admin).getOperation(name)).name, name);
    assert.equal((await exec(T.admin).waitExecution(name)).name, name);
    assert.ok((await exec(T.admin).listOperations(100)).operations.some((o) => o.name === name));
  });
});
