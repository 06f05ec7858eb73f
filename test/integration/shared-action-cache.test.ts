import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { ExecClient } from '../../src/client/execution-client.js';
import { computeDigest, type Digest, digestKey, SHA256, toWire } from '../../src/common/digest.js';
import { Code, codeOf } from '../../src/common/errors.js';
import { ReapiClient } from '../../src/reapi/reapi-client.js';
import { acKey } from '../../src/storage/action-cache.js';
import { ActionResult } from '../../src/proto/build/bazel/remote/execution/v2/remote_execution.js';
import { putBlob, uploadRawAction } from '../../support/actions.js';
import { freePort, type PostgresServer, startPostgres } from '../../support/postgres.js';
import { type ServerProcess, startServerProcess } from '../../support/servers.js';
import { runReprToEnd } from '../../support/spawn-server.js';
import { tmpDir } from '../../support/tmp.js';

/** A config file for `repr server` whose action cache is the postgres store at `url`. */
function acConfig(url: string): string {
  const file = path.join(tmpDir('repr-conf-'), 'server.json');
  writeFileSync(file, JSON.stringify({ storage: { ac: { type: 'postgres', url } } }));
  return file;
}

const text = (s: string) => Buffer.from(s);

/**
 * Two schedulers behind one load balancer: a CAS node (a cache-only server)
 * holds the blobs, PostgreSQL the action cache, and each scheduler reaches
 * both. What one records, the other serves.
 */
describe('two servers sharing a CAS node and a PostgreSQL action cache', () => {
  let db: PostgresServer;
  let casNode: ServerProcess;
  let a: ServerProcess;
  let b: ServerProcess;
  const clients: { close(): void }[] = [];
  const reapi = (s: ServerProcess) => {
    const c = new ReapiClient({ target: s.url });
    clients.push(c);
    return c;
  };

  before(async () => {
    db = await startPostgres();
    casNode = await startServerProcess(['--data-dir', tmpDir('repr-casnode-'), '--cache-only']);
    const config = acConfig(db.url);
    const scheduler = () => startServerProcess(['--data-dir', tmpDir('repr-sched-'), '--config', config, '--cas', casNode.url, '--executors', '1']);
    [a, b] = await Promise.all([scheduler(), scheduler()]);
  });

  after(async () => {
    for (const c of clients) c.close();
    await Promise.all([a, b, casNode].map((s) => s?.stop()));
    db?.stop();
  });

  it('serves through one server the result recorded through the other, its blobs read from the CAS node', async () => {
    const [viaA, viaB, node] = [reapi(a), reapi(b), reapi(casNode)];
    const output = await putBlob(viaA, text('compiled output'));
    const stdout = await putBlob(viaA, text('compiler said hello'));
    // Uploaded through a scheduler, stored on the node.
    assert.deepEqual(await node.findMissing([output, stdout]), []);
    const action = computeDigest(SHA256, text('an action recorded by a client of server A'));
    const result = ActionResult.fromPartial({
      exitCode: 0,
      outputFiles: [{ path: 'out/lib.o', digest: toWire(output), isExecutable: false, contents: Buffer.alloc(0), nodeProperties: undefined }],
      stdoutDigest: toWire(stdout),
    });
    await viaA.updateActionResult(action, result);
    const served = await viaB.getActionResult(action);
    assert.equal(served.outputFiles[0]?.path, 'out/lib.o');
    assert.deepEqual(served.outputFiles[0]?.digest, toWire(output));
    assert.deepEqual(served.stdoutDigest, toWire(stdout));
    assert.deepEqual(await viaB.read(output), text('compiled output'));
    // One row in the shared table, under the action cache's own key rather than the client's digest.
    assert.equal(db.psql(`SELECT count(*) FROM repr_action_results WHERE key = '${digestKey(acKey('', action))}'`), '1');
    assert.equal(db.psql(`SELECT count(*) FROM repr_action_results WHERE key LIKE '%${action.hash}%'`), '0');
  });

  it('serves from neither a result whose outputs are not in the CAS, until they are uploaded through either', async () => {
    const [viaA, viaB] = [reapi(a), reapi(b)];
    const absent = computeDigest(SHA256, text('an output nobody uploaded'));
    const action = computeDigest(SHA256, text('an action whose output went missing'));
    await viaA.updateActionResult(
      action,
      ActionResult.fromPartial({
        exitCode: 0,
        outputFiles: [{ path: 'gone', digest: toWire(absent), isExecutable: false, contents: Buffer.alloc(0), nodeProperties: undefined }],
      }),
    );
    for (const client of [viaA, viaB]) {
      await assert.rejects(client.getActionResult(action), (e: unknown) => {
        assert.equal(codeOf(e), Code.NOT_FOUND, (e as Error).message);
        assert.match((e as Error).message, new RegExp(`refers to 1 blob\\(s\\) no longer in the CAS \\(e\\.g\\. ${absent.hash}/`));
        return true;
      });
    }
    await putBlob(viaB, text('an output nobody uploaded'));
    assert.equal((await viaA.getActionResult(action)).outputFiles[0]?.path, 'gone');
  });

  it('answers from the cache on one server for an action the other executed', async () => {
    const viaA = reapi(a);
    const [execA, execB] = [new ExecClient(a.url), new ExecClient(b.url)];
    clients.push(execA, execB);
    const action: Digest = await uploadRawAction(viaA, {
      root: { 'in.txt': 'shared between schedulers' },
      command: { arguments: ['/bin/sh', '-c', 'tr a-z A-Z < in.txt > out.txt'], outputPaths: ['out.txt'] },
    });
    const first = (await execA.execute(action)).response;
    assert.equal(first?.status?.code ?? 0, Code.OK, first?.status?.message);
    assert.equal(first?.cachedResult, false);
    const second = (await execB.execute(action)).response;
    assert.equal(second?.cachedResult, true, 'executed again instead of served from the shared action cache');
    const upper = computeDigest(SHA256, text('SHARED BETWEEN SCHEDULERS'));
    assert.deepEqual(second?.result?.outputFiles.find((f) => f.path === 'out.txt')?.digest, toWire(upper));
    // A's executor put its output on the CAS node, not in a store of its own.
    assert.deepEqual(await reapi(casNode).findMissing([upper]), []);
  });
});

describe('a server whose PostgreSQL action cache cannot be reached', () => {
  it('does not start, and says which database in one line without its password', async () => {
    const port = await freePort();
    const config = acConfig(`postgres://repr:hunter2@127.0.0.1:${port}/repr`);
    const r = await runReprToEnd(['server', '--listen', '127.0.0.1:0', '--data-dir', tmpDir('repr-sched-'), '--config', config, '--cache-only']);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, new RegExp(`^repr: cannot use PostgreSQL at 127\\.0\\.0\\.1:${port}/repr: .*ECONNREFUSED.*\n$`, 'm'));
    assert.doesNotMatch(r.stderr, /hunter2/);
    assert.doesNotMatch(r.stderr, /\n\s+at /, 'no stack trace');
  });
});
