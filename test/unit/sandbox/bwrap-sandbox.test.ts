import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { chmodSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import path from 'node:path';
import { describe, it } from 'node:test';
import { BwrapSandbox } from '../../../src/sandbox/bwrap-sandbox.js';
import type { SandboxSpec } from '../../../src/sandbox/sandbox.js';
import { tmpDir } from '../../../support/tmp.js';
import { type FileSpec, fileSpec } from '../../../support/sandbox-spec.js';

const sandbox = new BwrapSandbox();

const spec = (script: string, over: Partial<SandboxSpec> = {}): FileSpec => fileSpec(script, over, { shell: '/bin/bash', timeoutMs: 20_000 });

const out = (s: FileSpec) => readFileSync(s.stdoutPath, 'utf8');

describe('bubblewrap sandbox', () => {
  it('runs a command in the input root as an unprivileged user and captures its output', async () => {
    const s = spec('echo hello; id -u; pwd; echo err >&2; exit 3');
    const r = await sandbox.run(s);
    assert.equal(r.exitCode, 3);
    assert.equal(out(s), 'hello\n65534\n/b/r\n');
    assert.equal(readFileSync(s.stderrPath, 'utf8'), 'err\n');
  });

  it('lets the action write outputs into its input root', async () => {
    const s = spec('mkdir -p out && echo data > out/file');
    assert.equal((await sandbox.run(s)).exitCode, 0);
    assert.equal(readFileSync(path.join(s.rootDir, 'out', 'file'), 'utf8'), 'data\n');
  });

  it('hides host files outside the inputs and the toolchain', async () => {
    const secretDir = tmpDir('repr-secret-');
    const secret = path.join(secretDir, 'secret.txt');
    writeFileSync(secret, 'top secret');
    const s = spec(`cat ${secret} 2>&1; ls /root /home /work 2>&1; test -e /usr/bin/env && echo toolchain-visible`);
    await sandbox.run(s);
    assert.doesNotMatch(out(s), /top secret/);
    assert.match(out(s), /secret.txt: No such file or directory/);
    assert.match(out(s), /cannot access '\/root': No such file/);
    assert.match(out(s), /toolchain-visible/);
  });

  it('cannot modify a root-owned read-only input (a hard-linked CAS file)', async () => {
    const s = spec('echo tampered > input.txt; chmod 666 input.txt; cat input.txt');
    writeFileSync(path.join(s.rootDir, 'input.txt'), 'original\n');
    chmodSync(path.join(s.rootDir, 'input.txt'), 0o444);
    await sandbox.run(s);
    assert.equal(readFileSync(path.join(s.rootDir, 'input.txt'), 'utf8'), 'original\n');
  });

  it('has no network unless asked for it', async () => {
    // The sandboxed client closes without reading, which resets the connection: not an error here.
    const server = createServer((c) => {
      c.on('error', () => undefined);
      c.end('pong');
    }).listen(0, '127.0.0.1');
    await new Promise((r) => server.once('listening', r));
    const port = (server.address() as { port: number }).port;
    try {
      const script = `exec 3<>/dev/tcp/127.0.0.1/${port} && echo connected`;
      const isolated = spec(script);
      await sandbox.run(isolated);
      assert.doesNotMatch(out(isolated), /connected/);
      const networked = spec(script, { network: true });
      await sandbox.run(networked);
      assert.match(out(networked), /connected/, 'with network the same command connects (the test can tell)');
    } finally {
      server.close();
    }
  });

  it('cannot exceed its memory limit', async () => {
    const s = spec('dd if=/dev/zero of=/dev/null bs=200M count=1 && echo survived', { limits: { memoryBytes: 64 * 1024 * 1024 } });
    const r = await sandbox.run(s);
    assert.doesNotMatch(out(s), /survived/);
    assert.notEqual(r.exitCode, 0);
    assert.equal(r.oomKilled, true);
  });

  it('caps the number of processes', async () => {
    const e = spec('for i in $(seq 1 40); do sleep 1 & done; wait', { limits: { pids: 10 }, timeoutMs: 15_000 });
    await sandbox.run(e);
    assert.match(readFileSync(e.stderrPath, 'utf8'), /fork|Resource temporarily unavailable/);
  });

  it('leaves no process running after the action ends', async () => {
    const marker = `sleep 1234.${process.pid}`;
    const s = spec(`(${marker} &) ; nohup ${marker} >/dev/null 2>&1 & echo started`);
    await sandbox.run(s);
    assert.match(out(s), /started/);
    const ps = execFileSync('ps', ['-eo', 'args'], { encoding: 'utf8' });
    assert.ok(!ps.includes(marker), `a background process survived:\n${ps}`);
  });

  it('kills the whole process tree on timeout and says so', async () => {
    const s = spec('sleep 30 & sleep 30; echo finished', { timeoutMs: 500 });
    const t = Date.now();
    const r = await sandbox.run(s);
    assert.equal(r.timedOut, true);
    assert.ok(Date.now() - t < 5000);
    assert.doesNotMatch(out(s), /finished/);
  });
});
