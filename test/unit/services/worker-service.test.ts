import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import { describe, it } from 'node:test';
import { Metadata, type ServerDuplexStream } from '@grpc/grpc-js';
import { Code } from '../../../src/common/errors.js';
import { silentLogger } from '../../../src/common/logger.js';
import { ExecuteResponse } from '../../../src/proto/build/bazel/remote/execution/v2/remote_execution.js';
import type { Lease, SchedulerMessage, WorkerMessage } from '../../../src/proto/repr/worker/v1/worker.js';
import { WorkerService } from '../../../src/services/worker-service.js';
import { bindCaller } from '../../../src/grpc/access-interceptor.js';
import { AccessPolicy } from '../../../src/grpc/access-policy.js';
import { finished, flush, harness, submitReq, OWNER } from '../scheduler/harness.js';
import { captureLogger } from '../../../support/log-capture.js';

/** Principals as the access interceptor would have authenticated them. */
const policy = new AccessPolicy({ principals: [{ name: 'scoped', roles: ['worker'], instances: ['a'] }] });
/** Every principal's token carries the worker role, except "scoped"'s, whose only grant is worker on instance "a". */
const callerNamed = (name: string) => policy.callerFor({ name, via: 'token', roles: name === 'scoped' ? [] : ['worker'] });

/** A worker's stream as the service sees it, driven by hand: nothing goes over the wire. */
class FakeStream extends EventEmitter {
  readonly sent: SchedulerMessage[] = [];
  readonly metadata = new Metadata();
  private ended: { code: number; details: string } | undefined;

  constructor() {
    super();
    this.on('error', (e: { code: number; details?: string; message: string }) => (this.ended ??= { code: e.code, details: e.details ?? e.message }));
  }

  write(m: SchedulerMessage): boolean {
    this.sent.push(m);
    return true;
  }

  end(): void {
    this.ended ??= { code: Code.OK, details: '' };
  }

  /** The status the service ended the stream with, if it has. */
  status(): { code: number; details: string } | undefined {
    return this.ended;
  }

  getPeer(): string {
    return 'ipv4:127.0.0.1:1';
  }

  send(m: WorkerMessage): void {
    this.emit('data', m);
  }

  register(name: string): void {
    this.send({
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
    });
  }

  leases(): Lease[] {
    return this.sent.flatMap((m) => (m.lease ? [m.lease] : []));
  }
}

function setup(over: { heartbeatTimeoutMs?: number; maxWorkers?: number } = {}, log = silentLogger()) {
  const h = harness({ log });
  const service = new WorkerService({
    scheduler: h.scheduler,
    log: silentLogger(),
    heartbeatTimeoutMs: 1000,
    maxExecutorsPerWorker: 8,
    maxWorkers: 4,
    clock: h.clock,
    ...over,
  });
  const connect = (name?: string, principal = 'worker-1') => {
    const s = new FakeStream();
    bindCaller(s.metadata, callerNamed(principal));
    service.connect(s as unknown as ServerDuplexStream<WorkerMessage, SchedulerMessage>);
    if (name) s.register(name);
    return s;
  };
  return { ...h, service, connect };
}

describe('WorkerService on a manual clock', () => {
  it('re-queues the lease of a worker whose stream drops, and of one that goes silent past the heartbeat timeout', async () => {
    const { scheduler, clock, service, connect } = setup();
    const dropper = connect('dropper');
    assert.ok(dropper.sent[0]?.welcome, 'welcomed');
    assert.equal(service.groups()[0]!.connected.getTime(), clock.now(), 'connected at clock time');
    const op = await scheduler.submit(submitReq(1), OWNER);
    const done = finished(scheduler, [op.name]);
    const [first] = dropper.leases();
    assert.ok(first);
    dropper.emit('cancelled');
    await flush();
    assert.equal(dropper.status()?.code, Code.UNAVAILABLE);

    const silent = connect('silent');
    const [second] = silent.leases();
    assert.equal(second?.operationName, first.operationName, 'the same operation, leased again');
    assert.notEqual(second.leaseId, first.leaseId);
    // No heartbeats: still there at the timeout, dropped at the first check past it.
    clock.advance(1000);
    assert.equal(silent.status(), undefined);
    clock.advance(250);
    assert.equal(silent.status()?.code, Code.UNAVAILABLE);
    assert.match(silent.status()!.details, /no heartbeat for 1250 ms \(timeout 1000 ms\)/);
    await flush();

    const good = connect('good');
    const [third] = good.leases();
    assert.equal(third?.operationName, first.operationName);
    good.send({ result: { leaseId: third.leaseId, response: ExecuteResponse.fromPartial({ result: { exitCode: 0 }, message: `done by ${third.leaseId}` }) } });
    await flush();
    assert.ok(done.all());
    assert.equal(done.states.get(op.name)!.response!.message, `done by ${third.leaseId}`);
    assert.equal(scheduler.stats().requeued, 2);
    service.close();
    scheduler.close();
  });

  it('keeps a worker that beats, however long it is connected, and records its last beat', () => {
    const { clock, service, connect } = setup();
    const w = connect('beating');
    for (let i = 0; i < 40; i++) {
      clock.advance(500);
      w.send({ heartbeat: {} });
    }
    assert.equal(w.status(), undefined);
    assert.equal(service.groups()[0]!.lastHeartbeat!.getTime(), clock.now());
    clock.advance(1250);
    assert.equal(w.status()?.code, Code.UNAVAILABLE);
    assert.deepEqual(service.groups(), []);
  });

  it('bounds the streams that have not registered, in number and in time', () => {
    const { clock, connect } = setup({ heartbeatTimeoutMs: 2000, maxWorkers: 3 });
    const waiting = [connect(), connect(), connect()];
    const turnedAway = connect();
    assert.equal(turnedAway.status()?.code, Code.RESOURCE_EXHAUSTED);
    assert.match(turnedAway.status()!.details, /3 worker streams are waiting to register: at most 3/);
    clock.advance(1999);
    assert.deepEqual(
      waiting.map((s) => s.status()),
      [undefined, undefined, undefined],
    );
    clock.advance(1);
    for (const s of waiting) {
      assert.equal(s.status()?.code, Code.DEADLINE_EXCEEDED);
      assert.match(s.status()!.details, /no register within 2000 ms/);
    }
    // Their places are free again.
    assert.ok(connect('late').sent[0]?.welcome);
  });

  it('refuses a stream no authenticated caller stands behind', () => {
    const { service } = setup();
    const s = new FakeStream();
    service.connect(s as unknown as ServerDuplexStream<WorkerMessage, SchedulerMessage>);
    assert.equal(s.status()?.code, Code.PERMISSION_DENIED);
    assert.match(s.status()!.details, /no authenticated caller/);
  });

  it('records the principal a worker connected as, and lets no other principal take its name', async () => {
    const { service, connect } = setup();
    const first = connect('build-1', 'alice');
    assert.equal(service.groups()[0]!.principal, 'alice');
    assert.equal(service.groups()[0]!.slots[0]!.owner.principal, 'alice');
    const thief = connect('build-1', 'mallory');
    assert.equal(thief.status()?.code, Code.PERMISSION_DENIED);
    assert.match(thief.status()!.details, /worker name "build-1" is held by principal "alice", not "mallory"/);
    assert.equal(first.status(), undefined, 'the real worker keeps its place');
    // The same principal reconnecting takes its old place, as before.
    const again = connect('build-1', 'alice');
    assert.ok(again.sent[0]?.welcome);
    assert.equal(first.status()?.code, Code.ALREADY_EXISTS, 'the replaced stream is told its name was taken, not to reconnect');
    service.close();
  });

  it("writes a worker's results to the action cache only for instances its principal holds worker on", async () => {
    const capture = captureLogger('warn');
    const { scheduler, service, connect, actionCache } = setup({}, capture.log);
    const w = connect('scoped-1', 'scoped');
    const inA = await scheduler.submit({ ...submitReq(1), instanceName: 'a' }, OWNER);
    const inB = await scheduler.submit({ ...submitReq(2), instanceName: 'b' }, OWNER);
    const done = finished(scheduler, [inA.name, inB.name]);
    for (let i = 0; i < 2; i++) {
      await flush();
      const lease = w.leases()[i]!;
      w.send({ result: { leaseId: lease.leaseId, response: ExecuteResponse.fromPartial({ result: { exitCode: 0 }, status: { code: 0 } }) } });
    }
    while (!done.all()) await flush();
    assert.ok(await actionCache.find('a', submitReq(1).actionDigest), 'cached where the principal is a worker');
    assert.equal(await actionCache.find('b', submitReq(2).actionDigest), undefined, 'not cached where it is not');
    assert.equal(done.states.get(inB.name)!.response!.result!.exitCode, 0, 'the client still gets its result');
    assert.equal(scheduler.stats().untrustedResults, 1);
    const warned = capture.records().filter((r) => /result not written to the action cache/.test(String(r.msg)));
    assert.deepEqual(
      warned.map((r) => [r.principal, r.instance]),
      [['scoped', 'b']],
    );
    service.close();
    scheduler.close();
  });
});
