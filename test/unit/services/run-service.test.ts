import assert from 'node:assert/strict';
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { credentials } from '@grpc/grpc-js';
import { SHA256 } from '../../../src/common/digest.js';
import { Code } from '../../../src/common/errors.js';
import { type ClientMessage, type RunFinished, type RunRequest, RunnerClient, type ServerMessage } from '../../../src/proto/repr/run/v1/run.js';
import type { ReprServer } from '../../../src/server/server.js';
import { startInProcess } from '../../../support/servers.js';
import { tmpDir } from '../../../support/tmp.js';

/** A raw Runner stream, to send what the repr CLI never would. */
class RawSession {
  private readonly client: InstanceType<typeof RunnerClient>;
  private readonly call;
  private readonly finished = new Map<string, (f: RunFinished) => void>();
  readonly received: ServerMessage[] = [];

  constructor(address: string) {
    this.client = new RunnerClient(address, credentials.createInsecure());
    this.call = this.client.session();
    this.call.on('data', (m: ServerMessage) => {
      this.received.push(m);
      if (m.finished) this.finished.get(m.finished.runId)?.(m.finished);
    });
    this.call.on('error', () => undefined);
  }

  send(m: ClientMessage): void {
    this.call.write(m);
  }

  run(partial: Partial<RunRequest> & { runId: string }): Promise<RunFinished> {
    const done = new Promise<RunFinished>((resolve) => this.finished.set(partial.runId, resolve));
    this.send({
      run: {
        arguments: ['/bin/true'],
        environmentVariables: [],
        workingDirectory: '/nowhere',
        roots: ['/nowhere'],
        mappings: [],
        instanceName: '',
        digestFunction: SHA256.value,
        platform: [],
        timeoutMs: 0,
        ...partial,
      },
    });
    return done;
  }

  close(): void {
    this.call.end();
    this.client.close();
  }
}

describe('Runner.Session: bad requests get a clear status and leave the stream usable', () => {
  let server: ReprServer;
  let s: RawSession;
  let proj: string;

  before(async () => {
    server = await startInProcess({ dataDir: tmpDir('repr-runsvc-'), instanceNames: ['', 'main'], execution: { executors: 1 } });
    s = new RawSession(server.address);
    proj = path.join(tmpDir('repr-runsvc-proj-'), 'p');
    mkdirSync(proj);
    writeFileSync(path.join(proj, 'f.txt'), 'data\n');
  });

  after(async () => {
    s.close();
    await server.stop();
  });

  const expectStatus = (f: RunFinished, code: Code, pattern: RegExp) => {
    assert.equal(f.status?.code, code, f.status?.message);
    assert.match(f.status!.message, pattern);
  };

  it('rejects roots that are relative, too broad, reserved or nested', async () => {
    expectStatus(await s.run({ runId: 'a', roots: ['rel/dir'], workingDirectory: '/x' }), Code.INVALID_ARGUMENT, /root must be an absolute, normalized path/);
    expectStatus(await s.run({ runId: 'b', roots: ['/'], workingDirectory: '/' }), Code.INVALID_ARGUMENT, /too broad/);
    expectStatus(await s.run({ runId: 'c', roots: ['/usr/local/src'], workingDirectory: '/usr/local/src' }), Code.INVALID_ARGUMENT, /overlaps \/usr/);
    expectStatus(await s.run({ runId: 'd', roots: ['/home/a', '/home/a/b'], workingDirectory: '/home/a' }), Code.INVALID_ARGUMENT, /inside root/);
    expectStatus(await s.run({ runId: 'e', roots: [] }), Code.INVALID_ARGUMENT, /at least one root/);
  });

  it('rejects an empty command, mappings outside the roots, bad digests and unknown instances', async () => {
    expectStatus(await s.run({ runId: 'f', arguments: [] }), Code.INVALID_ARGUMENT, /needs a command/);
    const outside = {
      path: '/elsewhere/x',
      node: { kind: 1, digest: { hash: 'ab', sizeBytes: 1 }, size: 1, executable: false, symlinkTarget: '', mtimeMs: 0, listed: false, entries: [], mode: 0 },
    };
    expectStatus(await s.run({ runId: 'g', roots: [proj], workingDirectory: proj, mappings: [outside] }), Code.INVALID_ARGUMENT, /outside every root/);
    const bad = { ...outside, path: path.join(proj, 'f.txt') };
    expectStatus(await s.run({ runId: 'h', roots: [proj], workingDirectory: proj, mappings: [bad] }), Code.INVALID_ARGUMENT, /hash|digest/i);
    expectStatus(await s.run({ runId: 'i', roots: [proj], workingDirectory: proj, instanceName: 'other' }), Code.INVALID_ARGUMENT, /unknown instance name/);
  });

  it('fails a run no executor can take with FAILED_PRECONDITION', async () => {
    expectStatus(
      await s.run({ runId: 'j', roots: [proj], workingDirectory: proj, platform: [{ name: 'pool', value: 'gpu' }] }),
      Code.FAILED_PRECONDITION,
      /pool/,
    );
  });

  const rootMapping = () => ({
    path: proj,
    node: { kind: 2, digest: undefined, size: 0, executable: false, symlinkTarget: '', mtimeMs: 0, listed: true, entries: [], mode: 0 },
  });

  it('kills a run past its timeout with DEADLINE_EXCEEDED and writes nothing back', async () => {
    const t = Date.now();
    const f = await s.run({
      runId: 'timeout',
      roots: [proj],
      workingDirectory: proj,
      mappings: [rootMapping()],
      timeoutMs: 500,
      arguments: ['/bin/sh', '-c', 'echo partial > out.txt; sleep 20'],
    });
    expectStatus(f, Code.DEADLINE_EXCEEDED, /timed out after 500 ms/);
    assert.ok(Date.now() - t < 10_000);
    assert.deepEqual(f.changes, []);
  });

  it('stops a run on CancelRun and reports CANCELLED', async () => {
    const started = new Promise<void>((resolve) => {
      const call = (s as unknown as { call: NodeJS.EventEmitter }).call;
      const on = (m: ServerMessage) => {
        if (m.output?.runId === 'cancel') {
          call.off('data', on);
          resolve();
        }
      };
      call.on('data', on);
    });
    const done = s.run({
      runId: 'cancel',
      roots: [proj],
      workingDirectory: proj,
      mappings: [rootMapping()],
      arguments: ['/bin/sh', '-c', 'echo go; sleep 20'],
    });
    await started;
    s.send({ cancel: { runId: 'cancel' } });
    expectStatus(await done, Code.CANCELLED, /cancelled/);
  });

  it('turns a client that refuses to answer into EIO for the command, not a hang', async () => {
    // Answer every question with an error, as a client would for a file it may not read.
    const onQuery = (m: ServerMessage) => {
      if (m.query?.runId === 'k')
        s.send({ reply: { runId: 'k', queryId: m.query.queryId, node: undefined, error: { code: Code.PERMISSION_DENIED, message: 'no', details: [] } } });
    };
    const call = (s as unknown as { call: NodeJS.EventEmitter }).call;
    call.on('data', onQuery);
    const root = {
      path: proj,
      node: { kind: 2, digest: undefined, size: 0, executable: false, symlinkTarget: '', mtimeMs: 0, listed: false, entries: [], mode: 0 },
    };
    const f = await s.run({ runId: 'k', roots: [proj], workingDirectory: proj, mappings: [root], arguments: ['/bin/sh', '-c', `cat ${proj}/f.txt`] });
    call.off('data', onQuery);
    assert.equal(f.status?.code ?? 0, Code.OK, f.status?.message);
    assert.notEqual(f.exitCode, 0);
    const stderr = Buffer.concat(s.received.filter((m) => m.output?.runId === 'k' && m.output.stream === 1).map((m) => Buffer.from(m.output!.data))).toString();
    assert.match(stderr, /Input\/output error|Permission denied/);
  });
});
