import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { type ClientDuplexStream, credentials } from '@grpc/grpc-js';
import { Code } from '../../../src/common/errors.js';
import { ReapiClient } from '../../../src/reapi/reapi-client.js';
import { ExecClient, uploadAction } from '../../../src/client/execution-client.js';
import { fetchStatus } from '../../../src/client/status-client.js';
import { type Lease, type SchedulerMessage, type WorkerMessage, WorkersClient } from '../../../src/proto/repr/worker/v1/worker.js';
import { ExecuteResponse } from '../../../src/proto/build/bazel/remote/execution/v2/remote_execution.js';
import type { ReprServer } from '../../../src/server/server.js';
import { startInProcess } from '../../../support/servers.js';
import { tmpDir } from '../../../support/tmp.js';

/**
 * A worker that speaks the protocol by hand, so that each test decides
 * exactly what the scheduler sees: silence, a wrong lease id, a dropped stream.
 */
class FakeWorker {
  readonly call: ClientDuplexStream<WorkerMessage, SchedulerMessage>;
  readonly received: SchedulerMessage[] = [];
  readonly ended: Promise<{ code: number; details: string }>;
  private waiters: (() => void)[] = [];
  private readonly client: InstanceType<typeof WorkersClient>;

  constructor(address: string, register: WorkerMessage | undefined, name = 'fake') {
    this.client = new WorkersClient(address, credentials.createInsecure());
    this.call = this.client.connect();
    this.call.on('data', (m: SchedulerMessage) => {
      this.received.push(m);
      for (const w of this.waiters.splice(0)) w();
    });
    this.ended = new Promise((resolve) => {
      this.call.on('error', (e: Error & { code: number; details: string }) => resolve({ code: e.code, details: e.details }));
      this.call.on('status', (s: { code: number; details: string }) => resolve(s));
    });
    this.call.write(
      register ?? {
        register: {
          workerName: name,
          executors: 1,
          properties: [{ name: 'OSFamily', value: 'linux' }],
          cpus: 1,
          memoryBytes: 1 << 30,
          networkAllowed: false,
          version: '',
          runs: false,
        },
      },
    );
  }

  /** Waits for the next message matching `pick`. */
  async next<T>(pick: (m: SchedulerMessage) => T | undefined, timeoutMs = 5000): Promise<T> {
    const until = Date.now() + timeoutMs;
    for (;;) {
      for (const [i, m] of this.received.entries()) {
        const v = pick(m);
        if (v !== undefined) {
          this.received.splice(i, 1);
          return v;
        }
      }
      if (Date.now() > until) throw new Error(`no matching message in ${timeoutMs} ms`);
      await new Promise<void>((r) => {
        this.waiters.push(r);
        setTimeout(r, 50);
      });
    }
  }

  lease(): Promise<Lease> {
    return this.next((m) => m.lease);
  }

  succeed(leaseId: string): void {
    this.call.write({ result: { leaseId, response: ExecuteResponse.fromPartial({ result: { exitCode: 0 }, message: `done by ${leaseId}` }) } });
  }

  close(): void {
    this.call.cancel();
    this.client.close();
  }
}

describe('worker protocol (a hand-driven worker against a real scheduler)', () => {
  let server: ReprServer;
  let client: ReapiClient;
  let exec: ExecClient;
  const fakes: FakeWorker[] = [];
  const fake = (name: string, register?: WorkerMessage) => {
    const f = new FakeWorker(server.address, register, name);
    fakes.push(f);
    return f;
  };

  before(async () => {
    server = await startInProcess({ dataDir: tmpDir(), execution: { executors: 0, workerHeartbeatTimeoutSeconds: 1 } });
    client = new ReapiClient({ target: server.address });
    exec = new ExecClient(server.address);
  });
  after(async () => {
    for (const f of fakes) f.close();
    client.close();
    exec.close();
    await server.stop();
  });

  it('rejects a stream that does not start with register', async () => {
    const f = fake('x', { heartbeat: {} });
    const end = await f.ended;
    assert.equal(end.code, Code.INVALID_ARGUMENT);
    assert.match(end.details, /first message.*register/);
  });

  it('sends the action inline, ignores a result for a lease it did not give, records the real one once', async () => {
    const f = fake('f1');
    const welcome = await f.next((m) => m.welcome);
    assert.ok(welcome.heartbeatInterval!.seconds * 1000 + welcome.heartbeatInterval!.nanos / 1e6 < 1000, 'beats several times per timeout');
    const action = await uploadAction(client, { argv: ['/bin/echo', 'hi'], salt: 'p1' });
    const pending = exec.execute(action);
    const lease = await f.lease();
    assert.deepEqual(lease.command!.arguments, ['/bin/echo', 'hi'], 'the Command comes with the lease');
    assert.equal(lease.actionDigest!.hash, action.hash);
    f.call.write({ heartbeat: {} });
    f.succeed('not-a-lease-of-mine');
    f.succeed(lease.leaseId);
    f.succeed(lease.leaseId); // a duplicate of a result already taken
    const r = await pending;
    assert.equal(r.response!.message, `done by ${lease.leaseId}`);
    const s = await fetchStatus(server.address);
    assert.equal(s.completed, 1);
    assert.equal(s.staleResults, 2);
    f.close();
  });

  // A worker that goes silent past the heartbeat timeout: worker-service.test.ts, on a manual clock.
  it('re-queues the lease of a worker whose stream drops', async () => {
    const dropper = fake('dropper');
    await dropper.next((m) => m.welcome);
    const action = await uploadAction(client, { argv: ['/bin/true'], salt: 'p2' });
    const pending = exec.execute(action);
    const first = await dropper.lease();
    const before = (await fetchStatus(server.address)).requeued;
    dropper.close();

    const good = fake('good');
    const second = await good.lease();
    assert.equal(second.operationName, first.operationName, 'the same operation, leased again');
    assert.notEqual(second.leaseId, first.leaseId);
    good.succeed(second.leaseId);
    const r = await pending;
    assert.equal(r.response!.message, `done by ${second.leaseId}`);
    assert.equal((await fetchStatus(server.address)).requeued - before, 1);
    good.close();
  });

  it('replaces the stream of a worker that reconnects under the same name, and forwards cancellations', async () => {
    const old = fake('same');
    await old.next((m) => m.welcome);
    const action = await uploadAction(client, { argv: ['/bin/true'], salt: 'p3' });
    let opName = '';
    const pending = exec.execute(action, { onFirst: (n) => (opName = n) });
    const lease = await old.lease();
    const fresh = fake('same');
    const ended = await old.ended;
    // Not UNAVAILABLE, which a worker retries: were the old stream another live worker's, the two would take turns forever.
    assert.equal(ended.code, Code.ALREADY_EXISTS, 'the old stream is closed, saying its name was taken');
    assert.match(ended.details, /^worker name "same" was taken by a new connection from 127\.0\.0\.1:\d+$/);
    const again = await fresh.lease();
    assert.equal(again.operationName, lease.operationName);
    const names = (await fetchStatus(server.address)).workers.map((w) => w.name);
    assert.deepEqual(
      names.filter((n) => n === 'same'),
      ['same'],
      'listed once',
    );

    await exec.cancelOperation(opName);
    const cancel = await fresh.next((m) => m.cancel);
    assert.equal(cancel.leaseId, again.leaseId);
    fresh.call.write({ result: { leaseId: again.leaseId, response: ExecuteResponse.fromPartial({ status: { code: Code.CANCELLED, message: 'cancelled' } }) } });
    assert.equal((await pending).response!.status!.code, Code.CANCELLED);
    fresh.close();
  });
});
