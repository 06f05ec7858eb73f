import assert from 'node:assert/strict';
import { mkdirSync, statSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { describe, it } from 'node:test';
import { localReason } from '../../../src/client/cc-args.js';
import { request } from '../../../src/client/daemon-client.js';
import { type DaemonReply, frameReader, MAX_REQUEST_BYTES, privateDir, socketPath } from '../../../src/client/daemon-protocol.js';
import { RunDaemon } from '../../../src/client/daemon.js';
import { StaticDiscovery } from '../../../src/client/discovery.js';
import { ManualClock } from '../../../src/common/clock.js';
import { tmpDir } from '../../../support/tmp.js';

const connect = (socket: string) =>
  new Promise<net.Socket>((resolve, reject) => {
    const c = net.connect(socket);
    c.once('connect', () => resolve(c));
    c.once('error', reject);
  });

/** A daemon whose server is never dialled: these tests only talk to its socket. */
async function idleDaemon(clock: ManualClock, idleTimeoutMs = 60_000) {
  const socket = path.join(tmpDir('repr-daemon-unit-'), 'run', 'd.sock');
  const d = new RunDaemon({ socket, discovery: new StaticDiscovery(['grpc://127.0.0.1:1']), instanceName: '', idleTimeoutMs, clock, log: () => undefined });
  assert.equal(await d.listen(), true);
  return { d, socket };
}

describe('repr daemon protocol', () => {
  it('splits frames across chunk boundaries and refuses one announced over the limit before reading it', () => {
    const got: unknown[] = [];
    const bad: string[] = [];
    const read = frameReader<unknown>(
      100,
      (m) => got.push(m),
      (why) => bad.push(why),
    );
    const body = Buffer.from(JSON.stringify({ op: 'status' }));
    const head = Buffer.alloc(4);
    head.writeUInt32BE(body.length);
    const both = Buffer.concat([head, body, head, body]);
    for (let i = 0; i < both.length; i += 3) read(both.subarray(i, i + 3));
    assert.deepEqual(got, [{ op: 'status' }, { op: 'status' }]);
    const big = Buffer.alloc(4);
    big.writeUInt32BE(101);
    read(big);
    assert.deepEqual(bad, ['a message of 101 bytes is over the limit of 100']);
    read(Buffer.concat([head, body]));
    assert.equal(got.length, 2, 'nothing is read after a refusal');
  });

  it('names one socket per server spec and settings, in a private directory', async () => {
    const env = { XDG_RUNTIME_DIR: tmpDir('repr-xdg-') };
    const a = socketPath({ server: 'grpc://a:1', instance: '' }, env);
    assert.equal(a, socketPath({ server: 'grpc://a:1', instance: '' }, env));
    assert.notEqual(a, socketPath({ server: 'grpc://b:1', instance: '' }, env));
    assert.notEqual(a, socketPath({ server: 'grpc://a:1', instance: '', token: 't' }, env));
    assert.equal(path.dirname(a), path.join(env.XDG_RUNTIME_DIR, 'repr'));
    await privateDir(path.dirname(a));
    assert.equal(statSync(path.dirname(a)).mode & 0o777, 0o700);
    const open = path.join(env.XDG_RUNTIME_DIR, 'open');
    mkdirSync(open, { mode: 0o755 });
    await assert.rejects(privateDir(open), /must be a directory only this user can enter \(it is mode 755/);
  });
});

describe('repr cc: what runs here', () => {
  const cases: [string[], string | undefined][] = [
    [['gcc', '-O2', '-c', 'a.c', '-o', 'a.o'], undefined],
    [['gcc', '-S', 'a.c'], undefined],
    [['gcc', '-MMD', '-MP', '-c', 'a.c', '-o', 'a.o'], undefined],
    [['gcc', '-o', 'app', 'a.o', 'b.o'], 'not a compile (no -c or -S): a link or a query'],
    [['gcc', '--version'], 'not a compile (no -c or -S): a link or a query'],
    [['gcc', '-E', 'a.c'], 'preprocessing only (-E)'],
    [['gcc', '-MM', 'a.c'], 'dependencies to stdout (-M)'],
    [['gcc', '-x', 'c', '-c', '-'], 'reads stdin'],
  ];
  for (const [argv, why] of cases) it(`${argv.join(' ')} → ${why ?? 'remote'}`, () => assert.equal(localReason(argv, []), why));

  it('runs here what matches a --local glob, whole arguments only', () => {
    assert.equal(localReason(['gcc', '-c', 'conftest.c'], ['conftest*']), 'conftest.c matches the local pattern conftest*');
    assert.equal(localReason(['gcc', '-c', 'src/gen/x.c'], ['src/*/x.?']), 'src/gen/x.c matches the local pattern src/*/x.?');
    assert.equal(localReason(['gcc', '-c', 'my-conftest.c'], ['conftest*']), undefined);
  });
});

describe('RunDaemon', () => {
  it('stops when no client has been connected for the idle timeout, and removes its socket', async () => {
    const clock = new ManualClock();
    const { d, socket } = await idleDaemon(clock, 60_000);
    assert.equal(statSync(socket).mode & 0o777, 0o600);
    const c = await connect(socket);
    while (d.clients === 0) await new Promise((r) => setImmediate(r));
    clock.advance(120_000);
    assert.equal(d.state, 'SERVING', 'a connected client keeps it');
    c.destroy();
    while (d.clients > 0) await new Promise((r) => setImmediate(r));
    clock.advance(59_000);
    assert.equal(d.state, 'SERVING');
    clock.advance(1_000);
    await d.stopped;
    assert.throws(() => statSync(socket), /ENOENT/);
  });

  it('answers a client that connects the moment its socket appears, before it has finished starting', async () => {
    // The clients of a parallel build start the daemon and dial its socket in a tight loop: the first
    // connection can land between bind and the end of listen(), and must be served, not dropped.
    const socket = path.join(tmpDir('repr-daemon-unit-'), 'run', 'd.sock');
    const d = new RunDaemon({ socket, discovery: new StaticDiscovery(['grpc://127.0.0.1:1']), instanceName: '', idleTimeoutMs: 60_000, log: () => undefined });
    try {
      const listening = d.listen();
      let c: net.Socket | undefined;
      let stateAtConnect = '';
      while (!c) {
        c = await connect(socket).catch(() => undefined);
        if (!c) await new Promise((r) => setImmediate(r));
        else stateAtConnect = d.state;
      }
      const st: DaemonReply[] = [];
      await request(c, { op: 'status' }, (r) => st.push(r));
      assert.equal(await listening, true);
      assert.equal(st.length, 1, `one status reply (connected while ${stateAtConnect})`);
      assert.equal((st[0] as { status: { pid: number } }).status.pid, process.pid);
    } finally {
      await d.stop();
    }
  });

  it('refuses a request over the size limit, a malformed exec, and a second daemon on its socket', async () => {
    const clock = new ManualClock();
    const { d, socket } = await idleDaemon(clock);
    try {
      const replies: DaemonReply[] = [];
      const big = await connect(socket);
      const head = Buffer.alloc(4);
      head.writeUInt32BE(MAX_REQUEST_BYTES + 1);
      const done = new Promise((r) => big.once('close', r));
      big.on(
        'data',
        frameReader<DaemonReply>(1 << 20, (m) => replies.push(m), assert.fail),
      );
      big.write(head);
      await done;
      assert.deepEqual(replies, [{ refused: `a message of ${MAX_REQUEST_BYTES + 1} bytes is over the limit of ${MAX_REQUEST_BYTES}` }]);

      const bad: DaemonReply[] = [];
      await request(await connect(socket), { op: 'exec', argv: [], cwd: '/', roots: [], env: [], platform: [], timeoutMs: 0 }, (r) => bad.push(r));
      assert.deepEqual(bad, [{ exit: 125, error: 'exec needs argv: a non-empty list of strings' }]);

      const second = new RunDaemon({
        socket,
        discovery: new StaticDiscovery(['grpc://127.0.0.1:1']),
        instanceName: '',
        idleTimeoutMs: 1000,
        log: () => undefined,
      });
      assert.equal(await second.listen(), false, 'the socket is served already');
      const st: DaemonReply[] = [];
      const c = await connect(socket);
      await request(c, { op: 'status' }, (r) => st.push(r));
      assert.equal((st[0] as { status: { pid: number } }).status.pid, process.pid, 'the first daemon still answers');
      await request(await connect(socket), { op: 'stop' }, () => undefined);
      await d.stopped;
    } finally {
      await d.stop();
    }
  });
});
