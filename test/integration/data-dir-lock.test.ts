import assert from 'node:assert/strict';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { startServerProcess, type ServerProcess } from '../../support/servers.js';
import { runReprToEnd } from '../../support/spawn-server.js';
import { tmpDir } from '../../support/tmp.js';

/**
 * One server per data directory: a second `repr server` on a directory in use
 * refuses in one line naming the holder's pid, and a lock left by a server
 * that died (SIGKILL) does not keep the directory from being used again.
 */
describe('the data directory lock', () => {
  const servers: ServerProcess[] = [];
  after(async () => {
    for (const s of servers) await s.stop('SIGKILL').catch(() => undefined);
  });

  it('a second server on the same data directory refuses with the holder pid; the first keeps serving', async () => {
    const dataDir = tmpDir('repr-lock-');
    const first = await startServerProcess(['--data-dir', dataDir, '--cache-only']);
    servers.push(first);
    const second = await runReprToEnd(['server', '--listen', '127.0.0.1:0', '--data-dir', dataDir, '--cache-only']);
    assert.equal(second.code, 1, second.stderr);
    assert.match(second.stderr, new RegExp(`^repr: data directory ${dataDir} is in use by another repr server \\(pid ${first.child.pid};`));
    assert.equal(second.stderr.trim().split('\n').length, 1, `one line, no stack trace: ${second.stderr}`);
    assert.equal(readFileSync(path.join(dataDir, 'repr.lock'), 'utf8').trim(), String(first.child.pid), 'the holder still holds it');

    assert.equal(await first.stop(), 0);
    assert.ok(!existsSync(path.join(dataDir, 'repr.lock')), 'a clean stop gives the directory up');
    servers.push(await startServerProcess(['--data-dir', dataDir, '--cache-only']));
  });

  it('a lock left by a killed server, or by a pid that is not a repr server, is taken over', async () => {
    const dataDir = tmpDir('repr-lock-');
    const killed = await startServerProcess(['--data-dir', dataDir, '--cache-only']);
    await killed.stop('SIGKILL');
    assert.ok(existsSync(path.join(dataDir, 'repr.lock')), 'SIGKILL leaves the lock file behind');
    const next = await startServerProcess(['--data-dir', dataDir, '--cache-only']);
    servers.push(next);
    assert.equal(readFileSync(path.join(dataDir, 'repr.lock'), 'utf8').trim(), String(next.child.pid));
    await next.stop();

    // pid 1 is alive but is not a repr server.
    writeFileSync(path.join(dataDir, 'repr.lock'), '1\n');
    servers.push(await startServerProcess(['--data-dir', dataDir, '--cache-only']));
  });
});
