import assert from 'node:assert/strict';
import { chmodSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer, type AddressInfo, type Server } from 'node:net';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { REPO_ROOT, startServerProcess, type ServerProcess } from '../../support/servers.js';
import { spawnSync } from 'node:child_process';
import { REPR_BIN, runReprToEnd } from '../../support/spawn-server.js';
import { tmpDir } from '../../support/tmp.js';

describe('repr --version', () => {
  it("prints package.json's version and exits 0", () => {
    const expected = (JSON.parse(readFileSync(path.join(REPO_ROOT, 'package.json'), 'utf8')) as { version: string }).version;
    for (const flag of ['--version', '-V']) {
      const r = spawnSync(process.execPath, [REPR_BIN, flag], { encoding: 'utf8' });
      assert.equal(r.status, 0, r.stderr);
      assert.equal(r.stdout.trim(), expected);
    }
  });
});

/** The exit codes README's "Exit codes" table documents. */
const FAILED = 1;
const USAGE = 2;
const RUN_FAILED = 125;

/** A failure as the user sees it: exactly one line on stderr, `repr: …`, matching `says`, and the documented code. */
function assertOneLine(r: { code: number | null; stderr: string }, code: number, says: RegExp): void {
  assert.equal(r.code, code, r.stderr);
  const lines = r.stderr.trimEnd().split('\n');
  assert.equal(lines.length, 1, `one line, no stack trace:\n${r.stderr}`);
  assert.match(lines[0]!, /^repr(?: run: [^:]+)?: /);
  assert.match(lines[0]!, says);
  assert.doesNotMatch(r.stderr, /No connection established|Resolution note|\n\s+at /);
}

/** A loopback port nothing listens on: bound, then closed, here and now. */
async function deadPort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((resolve) => s.listen(0, '127.0.0.1', resolve));
  const { port } = s.address() as AddressInfo;
  await new Promise<void>((resolve) => s.close(() => resolve()));
  return port;
}

/** A project directory for `repr run` (the temporary directory itself is refused as too broad). */
function project(): string {
  const dir = path.join(tmpDir('repr-cli-'), 'project');
  mkdirSync(dir);
  return dir;
}

describe('repr tells what went wrong in one line, with the documented exit code', () => {
  let cacheOnly: ServerProcess;
  let scheduler: ServerProcess;
  let dead: string;
  const held: Server = createServer();
  before(async () => {
    [cacheOnly, scheduler] = await Promise.all([
      startServerProcess(['--data-dir', tmpDir('repr-data-'), '--cache-only']),
      startServerProcess(['--data-dir', tmpDir('repr-data-'), '--executors', '0']),
    ]);
    dead = `grpc://127.0.0.1:${await deadPort()}`;
    await new Promise<void>((resolve) => held.listen(0, '127.0.0.1', resolve));
  });
  after(async () => {
    await Promise.all([cacheOnly.stop(), scheduler.stop()]);
    held.close();
  });

  it('a data directory that is a file', async () => {
    const file = path.join(tmpDir('repr-cli-'), 'data');
    writeFileSync(file, '');
    const r = await runReprToEnd(['server', '--listen', '127.0.0.1:0', '--data-dir', file]);
    assertOneLine(r, FAILED, /data directory .* is not usable: a file is in the way .*--data-dir/);
  });

  it('a data directory this user cannot write', async () => {
    const parent = tmpDir('repr-cli-');
    chmodSync(parent, 0o555);
    // root writes anywhere: run as nobody instead, as an unprivileged user would be.
    const asUser = process.getuid?.() === 0 ? { uid: 65534, gid: 65534 } : {};
    const r = await runReprToEnd(['server', '--listen', '127.0.0.1:0', '--data-dir', path.join(parent, 'data')], asUser);
    assertOneLine(r, FAILED, /data directory .* is not usable: this user \(uid \d+\) cannot write there; give --data-dir/);
  });

  it('a port in use: no claim to execute first, and the flag to change', async () => {
    const listen = `127.0.0.1:${(held.address() as AddressInfo).port}`;
    const r = await runReprToEnd(['server', '--listen', listen, '--data-dir', tmpDir('repr-data-')]);
    assertOneLine(r, FAILED, new RegExp(`^repr: cannot listen on ${listen}: the port is in use .*--listen$`));
    assert.doesNotMatch(r.stdout, /remote execution enabled|listening/);
  });

  it('repr run --root at a directory that does not exist', async () => {
    const missing = path.join(tmpDir('repr-cli-'), 'nope');
    const r = await runReprToEnd(['run', '--server', dead, '--root', missing, '--', 'true'], { cwd: project() });
    assertOneLine(r, RUN_FAILED, new RegExp(`root ${missing} does not exist; --root takes a directory`));
  });

  it('repr run and repr status against an address where nothing listens', async () => {
    const says = new RegExp(
      `cannot reach ${dead}: connection refused: nothing listens at that address; start repr server there, or give --server \\(or \\$REPR_SERVER\\)`,
    );
    assertOneLine(await runReprToEnd(['run', '--server', dead, '--', 'true'], { cwd: project() }), RUN_FAILED, says);
    assertOneLine(await runReprToEnd(['status', '--server', dead]), FAILED, says);
  });

  it('repr status at a host name that does not resolve', async () => {
    const r = await runReprToEnd(['status', '--server', 'grpc://no-such-host.invalid:8980']);
    assertOneLine(r, FAILED, /cannot reach grpc:\/\/no-such-host\.invalid:8980: the host name does not resolve/);
  });

  it('repr status and repr run against a cache-only server', async () => {
    const r = await runReprToEnd(['status', '--server', cacheOnly.url]);
    assertOneLine(r, FAILED, new RegExp(`${cacheOnly.url} does not serve the scheduler status \\(a --cache-only repr server.*--server`));
    const run = await runReprToEnd(['run', '--server', cacheOnly.url, '--', 'true'], { cwd: project() });
    assertOneLine(run, RUN_FAILED, /does not serve repr run/);
  });

  it('repr status honours $REPR_SERVER as repr run does; --server wins over it', async () => {
    const viaEnv = await runReprToEnd(['status'], { env: { REPR_SERVER: scheduler.url } });
    assert.equal(viaEnv.code, 0, viaEnv.stderr);
    assert.match(viaEnv.stdout, /^queued 0 {2}executing 0/);
    const flagWins = await runReprToEnd(['status', '--server', scheduler.url], { env: { REPR_SERVER: dead } });
    assert.equal(flagWins.code, 0, flagWins.stderr);
    assertOneLine(await runReprToEnd(['status'], { env: { REPR_SERVER: dead } }), FAILED, new RegExp(`cannot reach ${dead}`));
  });

  it('usage errors: one line pointing at --help; 2, or 125 for repr run', async () => {
    const cwd = project();
    const cases: [string[], number, RegExp][] = [
      [['server', '--no-such-flag'], USAGE, /^repr: unknown option '--no-such-flag'; see repr server --help$/],
      [['no-such-command'], USAGE, /^repr: unknown command 'no-such-command'; see repr --help$/],
      [['server', '--executors', 'many'], USAGE, /--executors.*see repr server --help$/],
      [['run', '--no-such-flag', '--', 'true'], RUN_FAILED, /unknown option '--no-such-flag'; see repr run --help$/],
      [['run'], RUN_FAILED, /^repr: nothing to run: give a command after --, or --batch FILE$/],
    ];
    const results = await Promise.all(cases.map(([args]) => runReprToEnd(args, { cwd })));
    for (const [i, [, code, says]] of cases.entries()) assertOneLine(results[i]!, code, says);
  });
});
