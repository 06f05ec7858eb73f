import assert from 'node:assert/strict';
import { credentials, makeGenericClientConstructor, type ServiceDefinition } from '@grpc/grpc-js';
import { after, before, describe, it } from 'node:test';
import { Code } from '../../../src/common/errors.js';
import { ReapiClient } from '../../../src/reapi/reapi-client.js';
import { ExecClient, uploadAction } from '../../../src/client/execution-client.js';
import { type ListOperationsResponse, type Operation, OperationsService } from '../../../src/proto/google/longrunning/operations.js';
import type { ReprServer } from '../../../src/server/server.js';
import { startInProcess } from '../../../support/servers.js';
import { tmpDir } from '../../../support/tmp.js';

const OperationsClient = makeGenericClientConstructor(OperationsService as unknown as ServiceDefinition, 'Operations');

/** The Operations calls exactly as a client sends them, with the collection name List takes. */
class Ops {
  private readonly c: InstanceType<typeof OperationsClient>;
  constructor(address: string) {
    this.c = new OperationsClient(address, credentials.createInsecure());
  }
  close(): void {
    this.c.close();
  }
  private unary<T>(method: string, req: unknown): Promise<T> {
    return new Promise((resolve, reject) =>
      (this.c as unknown as Record<string, (r: unknown, cb: (e: Error | null, r: T) => void) => void>)[method]!.call(this.c, req, (e, r) =>
        e ? reject(e) : resolve(r),
      ),
    );
  }
  get(name: string): Promise<Operation> {
    return this.unary('getOperation', { name });
  }
  cancel(name: string): Promise<unknown> {
    return this.unary('cancelOperation', { name });
  }
  delete(name: string): Promise<unknown> {
    return this.unary('deleteOperation', { name });
  }
  /** Every operation in a collection, all pages. */
  async list(collection: string): Promise<string[]> {
    const names: string[] = [];
    let pageToken = '';
    do {
      const r = await this.unary<ListOperationsResponse>('listOperations', {
        name: collection,
        filter: '',
        pageSize: 2,
        pageToken,
        returnPartialSuccess: false,
      });
      names.push(...r.operations.map((o) => o.name));
      pageToken = r.nextPageToken;
    } while (pageToken);
    return names;
  }
}

async function notFound(p: Promise<unknown>, what: string): Promise<void> {
  await assert.rejects(p, (e: Error & { code?: number }) => {
    assert.equal(e.code, Code.NOT_FOUND, `${what}: expected NOT_FOUND, got ${e.code}: ${e.message}`);
    return true;
  });
}

describe('operations are scoped to their instance', () => {
  let server: ReprServer;
  let cas: ReapiClient;
  let execA: ExecClient;
  let execB: ExecClient;
  let execEmpty: ExecClient;
  let ops: Ops;

  before(async () => {
    server = await startInProcess({ dataDir: tmpDir(), instanceNames: ['', 'a', 'b'], execution: { executors: 2 } });
    cas = new ReapiClient({ target: server.address, instanceName: 'a' });
    execA = new ExecClient(server.address, 'a');
    execB = new ExecClient(server.address, 'b');
    execEmpty = new ExecClient(server.address, '');
    ops = new Ops(server.address);
  });
  after(async () => {
    cas.close();
    execA.close();
    execB.close();
    execEmpty.close();
    ops.close();
    await server.stop();
  });

  it("hides instance a's running operation from clients of other instances", async () => {
    // Some finished operations of B and "" so their lists are not trivially empty.
    const quick = await uploadAction(cas, { argv: ['/bin/true'], salt: 'scoping quick', doNotCache: true });
    const ofB = (await execB.execute(quick)).name;
    const ofEmpty = (await execEmpty.execute(quick)).name;

    const slow = await uploadAction(cas, { argv: ['/bin/sleep', '30'], salt: 'scoping slow' });
    let name = '';
    const running = execA.execute(slow, { onFirst: (n) => (name = n) });
    while (!name) await new Promise((r) => setTimeout(r, 20));
    const id = name.slice(name.lastIndexOf('/') + 1);

    for (const collection of ['b/operations', 'b', 'operations', '']) {
      const listed = await ops.list(collection);
      assert.ok(!listed.some((n) => n.endsWith(id)), `"${collection}" does not list it`);
    }
    assert.ok((await ops.list('b/operations')).includes(ofB));
    assert.ok((await ops.list('')).includes(ofEmpty));
    assert.ok(!(await ops.list('')).includes(ofB));
    assert.ok((await ops.list('a/operations')).includes(name));

    // B (or "") asking with its own prefix, or with none, for the same id.
    for (const other of [`operations/${id}`, `b/operations/${id}`]) {
      await notFound(ops.get(other), `Get ${other}`);
      await notFound(ops.cancel(other), `Cancel ${other}`);
      await notFound(ops.delete(other), `Delete ${other}`);
      await notFound(execB.waitExecution(other), `WaitExecution ${other}`);
    }
    await notFound(ops.get(ofB.replace(/^b\//, 'a/')), "a's view of B's operation");

    assert.equal(name, `a/operations/${id}`, 'named after its instance, as REAPI suggests');
    const still = await ops.get(name);
    assert.equal(still.done, false, 'nothing above touched it');
    const waiting = execA.waitExecution(name);
    await ops.cancel(name);
    assert.equal((await running).response!.status!.code, Code.CANCELLED);
    assert.equal((await waiting).response!.status!.code, Code.CANCELLED);
    assert.equal((await ops.get(name)).done, true);
    await ops.delete(name);
    await notFound(ops.get(name), 'deleted');
  });
});
