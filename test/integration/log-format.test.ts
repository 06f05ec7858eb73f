import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { REPR_BIN, spawnServer } from '../../support/spawn-server.js';
import { tmpDir } from '../../support/tmp.js';

/** Colour and other terminal escapes, which say nothing about the words. */
// biome-ignore lint/suspicious/noControlCharactersInRegex: the escape character is what is being removed
const ESCAPES = /\u001b\[[0-9;]*m/g;

/**
 * Runs `repr server ARGS` under a pseudo-terminal (util-linux's script), as
 * a user at a terminal would, and resolves with what it printed up to its
 * "listening" line; the server is then stopped by its pid.
 */
function serverOnTerminal(args: string[]): Promise<string> {
  const dataDir = tmpDir('repr-tty-');
  const command = ['exec', process.execPath, REPR_BIN, 'server', '--listen', '127.0.0.1:0', '--data-dir', dataDir, '--cache-only', ...args]
    .map((w) => `'${w}'`)
    .join(' ')
    .replace(/^'exec'/, 'exec');
  const script = spawn('script', ['-qfec', command, '/dev/null'], { stdio: ['pipe', 'pipe', 'pipe'] });
  let out = '';
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => finish(new Error(`no "listening" line in 20 s:\n${out}`)), 20_000);
    let finished = false;
    const finish = (err?: Error) => {
      if (finished) return;
      finished = true;
      clearTimeout(timer);
      // The lock file names the server's pid: stop exactly that process.
      const lock = path.join(dataDir, 'repr.lock');
      if (existsSync(lock)) process.kill(Number(readFileSync(lock, 'utf8').trim()), 'SIGTERM');
      script.once('exit', () => (err ? reject(err) : resolve(out.replace(ESCAPES, ''))));
    };
    script.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      if (out.includes('repr server listening')) finish();
    });
  });
}

describe('log format', () => {
  it('is one readable line per event on a terminal', async () => {
    const out = await serverOnTerminal([]);
    const line = out.split(/\r?\n/).find((l) => l.includes('repr server listening'))!;
    assert.match(line, /^\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}\] INFO: repr server listening \{"address":"127\.0\.0\.1:\d+",.*\}\r?$/);
    assert.throws(() => JSON.parse(line));
  });

  it('is JSON on a terminal with --log-format json, and JSON lines through a pipe by default', async () => {
    const out = await serverOnTerminal(['--log-format', 'json']);
    const line = out.split(/\r?\n/).find((l) => l.includes('repr server listening'))!;
    assert.equal((JSON.parse(line) as { msg: string }).msg, 'repr server listening');

    // spawnServer reads stdout through a pipe and parses each line as JSON.
    const piped = await spawnServer(['--data-dir', tmpDir('repr-pipe-'), '--cache-only']);
    try {
      const first = JSON.parse(piped.logs[0]!) as { msg: string; time: string };
      assert.equal(first.msg, 'repr server listening');
    } finally {
      await piped.stop();
    }
  });

  it('is pretty through a pipe when asked', async () => {
    const piped = spawn(
      process.execPath,
      [REPR_BIN, 'server', '--listen', '127.0.0.1:0', '--data-dir', tmpDir('repr-pp-'), '--cache-only', '--log-format', 'pretty'],
      {
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    let out = '';
    await new Promise<void>((resolve) =>
      piped.stdout.on('data', (d: Buffer) => {
        out += d.toString();
        if (out.includes('\n')) resolve();
      }),
    );
    const exited = new Promise((r) => piped.once('exit', r));
    piped.kill('SIGTERM');
    await exited;
    assert.match(out, /^\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}\] INFO: repr server listening \{/);
    assert.doesNotMatch(out, ESCAPES, 'no colours where nobody sees them');
  });
});
