import assert from 'node:assert/strict';
import { chmodSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { CommandProvider } from '../../../src/autoscale/command-provider.js';
import { Code, ReprError } from '../../../src/common/errors.js';
import { captureLogger } from '../../../support/log-capture.js';
import { tmpDir } from '../../../support/tmp.js';

/** A real command that writes each argument it got on a line of its own, then the number of arguments. */
function recorder(): { script: string; out: string } {
  const dir = tmpDir('repr-cmd-provider-');
  const script = path.join(dir, 'record.sh');
  const out = path.join(dir, 'args');
  writeFileSync(script, `#!/bin/sh\nfor a in "$@"; do printf '%s\\n' "$a"; done >>"${out}"\necho "$#" >>"${out}"\n`);
  chmodSync(script, 0o755);
  return { script, out };
}

describe('CommandProvider', () => {
  it('passes {count}, {pool} and each name as argv items of their own, through no shell', async () => {
    const { script, out } = recorder();
    const { log } = captureLogger();
    const p = new CommandProvider({
      name: 'gpu',
      add: [script, 'add', '--n={count}', '{pool}', '{names}'],
      remove: [script, 'rm', '{names}'],
      timeoutMs: 10_000,
      log,
    });
    const added = await p.add('pool=gpu', 2);
    assert.equal(added.length, 2);
    for (const w of added) assert.match(w.name, /^gpu-[0-9a-f]{8}$/);
    await p.remove('pool=gpu', ['gpu-1', 'gpu-2.x']);
    assert.deepEqual(readFileSync(out, 'utf8').trimEnd().split('\n'), [
      'add',
      '--n=2',
      'gpu',
      added[0]!.name,
      added[1]!.name,
      '5',
      'rm',
      'gpu-1',
      'gpu-2.x',
      '3',
    ]);
  });

  it('refuses names that could be read as options or shell, and empty or nameless templates', async () => {
    const { script, out } = recorder();
    const { log } = captureLogger();
    const p = new CommandProvider({ name: 'p', add: [script], remove: [script, '{names}'], timeoutMs: 10_000, log });
    for (const bad of ['-rf', 'a b', 'x;reboot', '$(id)', '', '../x']) {
      await assert.rejects(p.remove('', ['p-ok', bad]), (e: unknown) => e instanceof ReprError && e.code === Code.INVALID_ARGUMENT);
    }
    assert.throws(() => readFileSync(out), /ENOENT/, 'the command never ran');
    assert.deepEqual(
      await p.add('', 2),
      [
        { name: '', pool: '' },
        { name: '', pool: '' },
      ],
      'without {names}, the names are known only once workers register',
    );
    assert.throws(() => new CommandProvider({ name: 'p', add: [script], remove: [script], timeoutMs: 1000, log }), /no "\{names\}" item/);
    assert.throws(() => new CommandProvider({ name: 'p', add: [], remove: [script, '{names}'], timeoutMs: 1000, log }), /provider\.add is empty/);
  });

  it('fails with UNAVAILABLE saying why: an exit code, or the timeout and its setting; the output is logged', async () => {
    const { log, records } = captureLogger();
    const failing = new CommandProvider({
      name: 'p',
      add: ['/bin/sh', '-c', 'echo quota exceeded >&2; exit 3'],
      remove: ['/bin/true', '{names}'],
      timeoutMs: 10_000,
      log,
    });
    await assert.rejects(failing.add('', 1), (e: unknown) => e instanceof ReprError && e.code === Code.UNAVAILABLE && /exited with code 3/.test(e.message));
    assert.ok(records().some((r) => r.msg === 'autoscale command failed: exited with code 3' && r.stderr === 'quota exceeded\n'));
    const slow = new CommandProvider({ name: 'p', add: ['/bin/sleep', '10'], remove: ['/bin/true', '{names}'], timeoutMs: 200, log });
    const t = performance.now();
    await assert.rejects(slow.add('', 1), /timed out after 0\.2 s \(provider\.timeoutSeconds\)/);
    assert.ok(performance.now() - t < 5000, 'killed at the timeout');
  });
});
