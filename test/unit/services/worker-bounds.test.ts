import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { type ClientDuplexStream, credentials } from '@grpc/grpc-js';
import { Code } from '../../../src/common/errors.js';
import { ReapiClient } from '../../../src/reapi/reapi-client.js';
import { ExecuteResponse, type ExecutionStage_Value } from '../../../src/proto/build/bazel/remote/execution/v2/remote_execution.js';
import { type ClientMessage, type OutputChunk_Stream, RunnerClient, RunFinished, type ServerMessage } from '../../../src/proto/repr/run/v1/run.js';
import { type Register, type RunLease, type SchedulerMessage, type WorkerMessage, WorkersClient } from '../../../src/proto/repr/worker/v1/worker.js';
import type { ReprServer } from '../../../src/server/server.js';
import { fetchStatus, type ServerProcess, startInProcess, startServerProcess } from '../../../support/servers.js';
import { tmpDir } from '../../../support/tmp.js';

/**
 * Everything a worker sends is attacker-controlled when auth is off: these
 * tests play a hostile worker and check that the server refuses it with a
 * status naming the field, and keeps answering everyone else.
 */

const GiB = 1024 ** 3;

function register(over: Partial<Register> = {}): WorkerMessage {
  return {
    register: {
      workerName: 'w',
      executors: 1,
      properties: [{ name: 'OSFamily', value: 'linux' }],
      cpus: 1,
      memoryBytes: GiB,
      networkAllowed: false,
      version: '',
      runs: false,
      ...over,
    },
  };
}

/** Fails instead of hanging when the server never answers (the defect under test). */
function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no answer in ${ms} ms`)), ms);
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}

type Outcome = { welcome: true } | { code: number; details: string };

class HostileWorker {
  readonly call: ClientDuplexStream<WorkerMessage, SchedulerMessage>;
  readonly ended: Promise<{ code: number; details: string }>;
  /** The first answer to the registration: a welcome or the stream's end. */
  readonly outcome: Promise<Outcome>;
  readonly runLease: Promise<RunLease>;
  private readonly client: InstanceType<typeof WorkersClient>;

  constructor(address: string, first: WorkerMessage) {
    this.client = new WorkersClient(address, credentials.createInsecure(), { 'grpc.max_send_message_length': -1 });
    this.call = this.client.connect();
    this.ended = new Promise((resolve) => {
      this.call.on('error', (e: Error & { code: number; details: string }) => resolve({ code: e.code, details: e.details }));
      this.call.on('status', (s: { code: number; details: string }) => resolve(s));
    });
    const welcomed = new Promise<Outcome>((resolve) => this.call.on('data', (m: SchedulerMessage) => m.welcome && resolve({ welcome: true })));
    this.outcome = Promise.race([welcomed, this.ended]);
    this.runLease = new Promise((resolve) => this.call.on('data', (m: SchedulerMessage) => m.runLease && resolve(m.runLease)));
    this.call.write(first);
  }

  close(): void {
    this.call.cancel();
    this.client.close();
  }
}

async function assertRefused(o: Outcome, code: Code, details: RegExp): Promise<void> {
  assert.ok(!('welcome' in o), `expected ${Code[code]} matching ${details}, but the worker was welcomed`);
  assert.equal(o.code, code, `status ${Code[o.code]}: ${o.details}`);
  assert.match(o.details, details);
}

describe('a worker registration cannot freeze the server', { timeout: 60_000 }, () => {
  let server: ServerProcess;
  let client: ReapiClient;
  const workers: HostileWorker[] = [];

  before(async () => {
    // A separate process, so that a server stuck in a loop fails this test by
    // its timeout instead of stopping the test runner too; the small heap
    // keeps a server that allocates without bound from taking the machine's memory.
    const saved = process.env.NODE_OPTIONS;
    process.env.NODE_OPTIONS = `${saved ?? ''} --max-old-space-size=256`.trim();
    try {
      server = await startServerProcess(['--data-dir', tmpDir('repr-bounds-'), '--executors', '0']);
    } finally {
      if (saved === undefined) delete process.env.NODE_OPTIONS;
      else process.env.NODE_OPTIONS = saved;
    }
    client = new ReapiClient({ target: server.address });
  });
  after(async () => {
    for (const w of workers) w.close();
    client.close();
    await server.stop('SIGKILL');
  });

  for (const executors of [4294967295, 5_000_000]) {
    it(`refuses executors=${executors} at once and goes on answering`, { timeout: 15_000 }, async () => {
      const w = new HostileWorker(server.address, register({ workerName: `greedy-${executors}`, executors }));
      workers.push(w);
      const o = await within(w.outcome, 5000, 'the registration');
      await assertRefused(o, Code.INVALID_ARGUMENT, new RegExp(`executors ${executors} is out of range: at most 1024 per worker`));
      const started = Date.now();
      await within(client.getCapabilities(), 2000, 'GetCapabilities after the registration');
      const s = await within(fetchStatus(server.address, 2000), 2000, 'GetStatus after the registration');
      assert.ok(Date.now() - started < 2000);
      assert.deepEqual(s.workers, [], 'no executors were added');
    });
  }
});

describe('what a worker sends is bounded', { timeout: 120_000 }, () => {
  let server: ReprServer;
  let client: ReapiClient;
  const workers: HostileWorker[] = [];
  const connect = (first: WorkerMessage) => {
    const w = new HostileWorker(server.address, first);
    workers.push(w);
    return w;
  };
  const refused = async (first: WorkerMessage, code: Code, details: RegExp) => {
    const w = connect(first);
    await assertRefused(await within(w.outcome, 5000, 'the registration'), code, details);
    await within(client.getCapabilities(), 2000, 'GetCapabilities after a refused registration');
  };
  /** A registered worker, for the messages that come after Register. */
  const registered = async (name: string, over: Partial<Register> = {}) => {
    const w = connect(register({ workerName: name, ...over }));
    assert.deepEqual(await within(w.outcome, 5000, 'the registration'), { welcome: true });
    return w;
  };
  const lostFor = async (w: HostileWorker, m: WorkerMessage, details: RegExp, code = Code.INVALID_ARGUMENT) => {
    w.call.write(m);
    const end = await within(w.ended, 5000, 'the stream after a bad message');
    assert.equal(end.code, code, `status ${Code[end.code]}: ${end.details}`);
    assert.match(end.details, details);
  };

  const waitForNoWorkers = async () => {
    for (let i = 0; (await fetchStatus(server.address)).workers.length > 0; i++) {
      assert.ok(i < 100, 'workers still listed');
      await new Promise((r) => setTimeout(r, 50));
    }
  };

  before(async () => {
    server = await startInProcess({
      dataDir: tmpDir(),
      execution: { executors: 0, workerHeartbeatTimeoutSeconds: 2, maxWorkers: 3, maxExecutorsPerWorker: 64 },
    });
    client = new ReapiClient({ target: server.address });
  });
  after(async () => {
    for (const w of workers) w.close();
    client.close();
    await server.stop();
  });

  it('refuses out-of-range executor counts, naming the configured limit', async () => {
    await refused(register({ executors: 65 }), Code.INVALID_ARGUMENT, /executors 65 is out of range: at most 64 per worker/);
    await refused(register({ executors: 0 }), Code.INVALID_ARGUMENT, /executors 0 is out of range: at least 1/);
  });

  it('refuses cpus and memory that are not a finite, sane amount', async () => {
    for (const cpus of [Number.NaN, Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY, -1, 1e9]) {
      await refused(register({ cpus }), Code.INVALID_ARGUMENT, new RegExp(`cpus ${cpus} is out of range`));
    }
    for (const memoryBytes of [-1, 2 ** 52]) {
      await refused(register({ memoryBytes }), Code.INVALID_ARGUMENT, new RegExp(`memory_bytes ${memoryBytes} is out of range`));
    }
    // Past 2^53 the message does not even decode: grpc-js ends the stream before the handler sees it.
    const w = connect(register({ memoryBytes: 2 ** 60 }));
    const o = await within(w.outcome, 5000, 'the registration');
    assert.ok(!('welcome' in o) && o.code !== Code.OK, 'an undecodable registration is refused');
    await within(client.getCapabilities(), 2000, 'GetCapabilities after an undecodable registration');
  });

  it('refuses too many properties and oversize names, values and versions', async () => {
    const many = Array.from({ length: 129 }, (_, i) => ({ name: `p${i}`, value: 'v' }));
    await refused(register({ properties: many }), Code.INVALID_ARGUMENT, /129 properties.*at most 128/);
    await refused(register({ properties: [{ name: 'n'.repeat(257), value: 'v' }] }), Code.INVALID_ARGUMENT, /properties\[0\]\.name is 257 bytes: at most 256/);
    await refused(
      register({ properties: [{ name: 'image', value: 'v'.repeat(1025) }] }),
      Code.INVALID_ARGUMENT,
      /properties\[0\]\.value is 1025 bytes: at most 1024/,
    );
    await refused(register({ properties: [{ name: '', value: 'v' }] }), Code.INVALID_ARGUMENT, /properties\[0\]\.name is empty/);
    await refused(register({ workerName: 'w'.repeat(257) }), Code.INVALID_ARGUMENT, /worker_name is 257 bytes: at most 256/);
    await refused(register({ workerName: 'evil\nforged log line' }), Code.INVALID_ARGUMENT, /worker_name .*control characters/);
    await refused(register({ version: 'v'.repeat(257) }), Code.INVALID_ARGUMENT, /version is 257 bytes: at most 256/);
    // A 4 MiB name, under the gRPC message limit: refused without being echoed back or logged.
    await refused(register({ workerName: 'w'.repeat(4 * 1024 * 1024) }), Code.INVALID_ARGUMENT, /worker_name is 4194304 bytes/);
  });

  it('accepts a registration just under every limit', async () => {
    const w = await registered('n'.repeat(256), {
      executors: 64,
      properties: [{ name: 'n'.repeat(256), value: 'v'.repeat(1024) }, ...Array.from({ length: 127 }, (_, i) => ({ name: `p${i}`, value: 'v' }))],
      cpus: 65536,
      memoryBytes: 2 ** 50,
      version: 'v'.repeat(256),
    });
    const s = await fetchStatus(server.address);
    assert.equal(s.workers.find((x) => x.name === 'n'.repeat(256))?.executors, 64);
    w.close();
    await waitForNoWorkers();
  });

  it('refuses workers beyond the configured number with RESOURCE_EXHAUSTED, and lets one reconnect under its own name', async () => {
    const three = [await registered('a'), await registered('b'), await registered('c')];
    await refused(register({ workerName: 'd' }), Code.RESOURCE_EXHAUSTED, /3 workers are connected: at most 3/);
    const again = await registered('a');
    assert.equal((await within(three[0]!.ended, 5000, 'the replaced stream')).code, Code.ALREADY_EXISTS);
    three[1]!.close();
    // The slot freed by b's departure is taken by d.
    for (let i = 0; ; i++) {
      const d = connect(register({ workerName: 'd' }));
      const o = await within(d.outcome, 5000, 'the registration');
      if ('welcome' in o) break;
      assert.ok(i < 50, 'a worker that left still counts');
      await new Promise((r) => setTimeout(r, 100));
    }
    for (const w of [again, ...three, ...workers]) w.close();
    await waitForNoWorkers();
  });

  it('ends the stream of a worker that sends an out-of-range later message', async () => {
    await lostFor(await registered('l1'), { result: { leaseId: 'x'.repeat(100), response: undefined } }, /lease_id is 100 bytes: at most 64/);
    await lostFor(await registered('l2'), { returned: { leaseId: 'x', reason: 'r'.repeat(4097) } }, /reason is 4097 bytes: at most 4096/);
    await lostFor(await registered('l3'), { progress: { leaseId: 'x', stage: 99 as ExecutionStage_Value } }, /stage 99/);
    await lostFor(await registered('l4'), { runOutput: { runId: 'x', stream: 7 as OutputChunk_Stream, data: Buffer.alloc(1) } }, /stream 7/);
    await lostFor(
      await registered('l5'),
      { runOutput: { runId: 'x', stream: 0, data: Buffer.alloc(1024 * 1024 + 1) } },
      /data is 1048577 bytes: at most 1048576/,
    );
    await lostFor(
      await registered('l6'),
      { runQuery: { runId: 'x', queryId: 1, path: `/${'p'.repeat(4096)}`, list: false } },
      /path is 4097 bytes: at most 4096/,
    );
    await lostFor(await registered('l7'), { runFinished: RunFinished.fromPartial({ runId: 'x', status: { code: 99, message: '' } }) }, /status code 99/);
    await lostFor(
      await registered('l8'),
      { runFinished: RunFinished.fromPartial({ runId: 'x', stats: { top: Array.from({ length: 101 }, () => ({ path: '/a', micros: 1, bytes: 1 })) } }) },
      /stats\.top has 101 entries: at most 100/,
    );
    await lostFor(await registered('l9'), { result: { leaseId: 'x', response: ExecuteResponse.fromPartial({ status: { code: -1 } }) } }, /status code -1/);
    await within(client.getCapabilities(), 2000, 'GetCapabilities after the bad messages');
    await waitForNoWorkers();
  });

  it('bounds the streams that have not registered, in number and in time', async () => {
    const clients = Array.from({ length: 4 }, () => new WorkersClient(server.address, credentials.createInsecure()));
    const ends = clients.map((c) => {
      const call = c.connect();
      return new Promise<{ code: number; details: string }>((resolve) => {
        call.on('error', (e: Error & { code: number; details: string }) => resolve(e));
        call.on('status', (s: { code: number; details: string }) => resolve(s));
      });
    });
    const all = await within(Promise.all(ends), 5000, 'the silent streams');
    for (const c of clients) c.close();
    // maxWorkers (3) may wait; the fourth is turned away, the others time out after the heartbeat timeout.
    assert.deepEqual(all.map((e) => e.code).sort(), [Code.DEADLINE_EXCEEDED, Code.DEADLINE_EXCEEDED, Code.DEADLINE_EXCEEDED, Code.RESOURCE_EXHAUSTED].sort());
    assert.match(all.find((e) => e.code === Code.RESOURCE_EXHAUSTED)!.details, /3 worker streams are waiting to register: at most 3/);
    assert.match(all.find((e) => e.code === Code.DEADLINE_EXCEEDED)!.details, /no register within 2000 ms/);
    await within(client.getCapabilities(), 2000, 'GetCapabilities after the silent streams');
  });

  it('bounds the questions a worker relays to a run client', async () => {
    const w = await registered('runner', { runs: true });
    const runner = new RunnerClient(server.address, credentials.createInsecure());
    const session: ClientDuplexStream<ClientMessage, ServerMessage> = runner.session();
    let queries = 0;
    const finished = new Promise<RunFinished>((resolve) =>
      session.on('data', (m: ServerMessage) => {
        if (m.query) queries++;
        if (m.finished) resolve(m.finished);
      }),
    );
    session.on('error', () => {});
    session.write({
      run: {
        runId: 'r1',
        arguments: ['/bin/true'],
        environmentVariables: [],
        workingDirectory: '/work/p',
        roots: ['/work/p'],
        mappings: [],
        instanceName: '',
        digestFunction: 0,
        platform: [],
        timeoutMs: 0,
      },
    });
    const lease = await within(w.runLease, 5000, 'the run lease');
    // The client answers nothing: each question waits, and the worker asks on.
    for (let i = 1; i <= 1025; i++) w.call.write({ runQuery: { runId: lease.leaseId, queryId: i, path: `/work/p/f${i}`, list: false } });
    const end = await within(w.ended, 5000, 'the worker stream');
    assert.equal(end.code, Code.RESOURCE_EXHAUSTED, end.details);
    assert.match(end.details, /1024 questions/);
    const f = await within(finished, 5000, 'the run');
    assert.equal(f.status?.code, Code.UNAVAILABLE);
    assert.ok(queries <= 1024, `${queries} questions reached the client`);
    session.end();
    runner.close();
  });
});
