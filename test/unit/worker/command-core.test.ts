import assert from 'node:assert/strict';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { ManualClock } from '../../../src/common/clock.js';
import { Code } from '../../../src/common/errors.js';
import { silentLogger } from '../../../src/common/logger.js';
import type { SandboxResult } from '../../../src/sandbox/sandbox.js';
import {
  commandOutcome,
  effectiveTimeoutMs,
  type OutcomeContext,
  prepareCommand,
  removeScratchDir,
  sandboxUser,
  scratchDirPath,
} from '../../../src/worker/command-core.js';
import { tmpDir } from '../../../support/tmp.js';

const bounds = { defaultTimeoutMs: 900_000, maxTimeoutMs: 3_600_000 };
const exited = (over: Partial<SandboxResult> = {}): SandboxResult => ({ exitCode: 0, timedOut: false, oomKilled: false, wallMs: 5, ...over });
const ctx = (kind: 'action' | 'run', over: Partial<OutcomeContext> = {}): OutcomeContext => ({
  kind,
  executorId: 'host/0',
  timeoutMs: 1000,
  cancelled: false,
  limits: {},
  ...over,
});

describe('prepareCommand: one command spec for actions and runs', () => {
  it('takes the requested timeout, the default for none, and never more than the maximum', () => {
    const timeout = (ms: number) => prepareCommand({ timeoutMs: ms, environmentVariables: [], requirements: [] }, bounds).timeoutMs;
    assert.equal(timeout(5000), 5000);
    assert.equal(timeout(0), 900_000);
    assert.equal(timeout(-1), 900_000, 'a negative timeout is never "no timeout"');
    assert.equal(timeout(Number.NaN), 900_000);
    assert.equal(timeout(10_000_000), 3_600_000);
    assert.equal(effectiveTimeoutMs(0, 0, 0), 1, 'there is always a timeout');
  });

  it('gives a command without PATH the toolchain PATH, keeps one it sets, and keeps the last of a repeated name', () => {
    const env = (vars: { name: string; value: string }[]) => prepareCommand({ timeoutMs: 0, environmentVariables: vars, requirements: [] }, bounds).env;
    assert.deepEqual(env([{ name: 'A', value: '1' }]), { A: '1', PATH: '/usr/local/bin:/usr/bin:/bin' });
    assert.deepEqual(env([{ name: 'PATH', value: '/opt/bin' }]), { PATH: '/opt/bin' });
    assert.deepEqual(
      env([
        { name: 'A', value: '1' },
        { name: 'A', value: '2' },
        { name: 'PATH', value: '/x' },
      ]),
      { A: '2', PATH: '/x' },
    );
  });

  it('sizes the sandbox from the platform and leaves labels alone', () => {
    const p = prepareCommand(
      {
        timeoutMs: 0,
        environmentVariables: [],
        requirements: [
          { name: 'memory', value: '64MiB' },
          { name: 'cpu', value: '2' },
          { name: 'network', value: 'on' },
          { name: 'OSFamily', value: 'linux' },
        ],
      },
      bounds,
    );
    assert.deepEqual(p.limits, { memoryBytes: 64 * 1024 * 1024, cpus: 2 });
    assert.equal(p.network, true);
    assert.equal(prepareCommand({ timeoutMs: 0, environmentVariables: [], requirements: [] }, bounds).network, false);
  });

  it('runs commands as nobody unless told otherwise', () => {
    assert.deepEqual(sandboxUser({}), { uid: 65534, gid: 65534 });
    assert.deepEqual(sandboxUser({ uid: 1000, gid: 100 }), { uid: 1000, gid: 100 });
  });
});

describe('scratch directories', () => {
  it('are named from the injected clock, unique, under the work directory', () => {
    const clock = new ManualClock(36 ** 3);
    const a = scratchDirPath('/w', 'run-', clock);
    const b = scratchDirPath('/w', 'run-', clock);
    assert.match(a, /^\/w\/run-1000-[0-9a-f]{8}$/);
    assert.notEqual(a, b);
  });

  it('are removed with everything in them', async () => {
    const dir = path.join(tmpDir('repr-scratch-'), 'x');
    mkdirSync(path.join(dir, 'a', 'b'), { recursive: true });
    writeFileSync(path.join(dir, 'a', 'b', 'f'), 'data');
    await removeScratchDir(dir, silentLogger(), { mayHoldMounts: true });
    assert.equal(existsSync(dir), false);
    await removeScratchDir(dir, silentLogger(), { mayHoldMounts: true }); // already gone: no error
  });
});

describe('commandOutcome: one reading of a sandbox result', () => {
  it('a clean exit: OK, writes kept; a non-zero exit: OK with the exit code the answer', () => {
    assert.deepEqual(commandOutcome(exited(), ctx('action')), { end: 'exited', code: Code.OK, message: '', keepWrites: true });
    const failed = commandOutcome(exited({ exitCode: 3 }), ctx('action'));
    assert.equal(failed.code, Code.OK);
    assert.equal(failed.keepWrites, true);
    assert.match(failed.message, /action exited with code 3 on host\/0/);
    const killed = commandOutcome(exited({ exitCode: 137, signal: 'SIGKILL' }), ctx('action'));
    assert.match(killed.message, /exited with code 137 \(killed by SIGKILL\)/);
    // A run's client exits with the code itself: no message to add.
    assert.deepEqual(commandOutcome(exited({ exitCode: 3 }), ctx('run')), { end: 'exited', code: Code.OK, message: '', keepWrites: true });
  });

  it('out of memory is the command failing, for actions and runs alike: OK, its exit code, a message naming the limit', () => {
    for (const kind of ['action', 'run'] as const) {
      const o = commandOutcome(exited({ exitCode: 137, signal: 'SIGKILL', oomKilled: true, memoryLimitBytes: 67_108_864 }), ctx(kind));
      assert.equal(o.end, 'out-of-memory');
      assert.equal(o.code, Code.OK, kind);
      assert.equal(o.keepWrites, true, kind);
      assert.match(o.message, /memory limit of 67108864 bytes/);
      assert.match(o.message, /exit code 137, killed by SIGKILL/);
      assert.match(o.message, /on host\/0/);
    }
    // The limit asked for names it when the sandbox did not report one.
    assert.match(
      commandOutcome(exited({ exitCode: 1, oomKilled: true }), ctx('action', { limits: { memoryBytes: 1024 } })).message,
      /memory limit of 1024 bytes/,
    );
  });

  it('a cap of the sandbox: FAILED_PRECONDITION for an action, RESOURCE_EXHAUSTED for a run, nothing kept', () => {
    const r = exited({ exitCode: 137, signal: 'SIGKILL', limitExceeded: { limit: 'stdout-bytes', max: 10, message: 'stdout exceeded 10 bytes' } });
    assert.deepEqual(commandOutcome(r, ctx('action')), {
      end: 'limit-exceeded',
      code: Code.FAILED_PRECONDITION,
      message: 'stdout exceeded 10 bytes on host/0',
      keepWrites: false,
    });
    assert.deepEqual(commandOutcome(r, ctx('run')), {
      end: 'limit-exceeded',
      code: Code.RESOURCE_EXHAUSTED,
      message: 'stdout exceeded 10 bytes; nothing was written back',
      keepWrites: false,
    });
    // A cap broken by a process the kernel also killed for memory is still the cap.
    assert.equal(commandOutcome({ ...r, oomKilled: true }, ctx('action')).code, Code.FAILED_PRECONDITION);
  });

  it('a timeout, from the sandbox or from a deadline outside it: DEADLINE_EXCEEDED naming it, nothing kept', () => {
    const a = commandOutcome(exited({ exitCode: 137, timedOut: true }), ctx('action', { timeoutMs: 250 }));
    assert.deepEqual(a, {
      end: 'timed-out',
      code: Code.DEADLINE_EXCEEDED,
      message: 'action timed out after 250 ms; its process tree was killed',
      keepWrites: false,
    });
    const r = commandOutcome(exited({ exitCode: 0 }), ctx('run', { timeoutMs: 250, timedOut: true }));
    assert.equal(r.code, Code.DEADLINE_EXCEEDED);
    assert.match(r.message, /run timed out after 250 ms.*nothing was written back/);
    assert.equal(r.keepWrites, false);
  });

  it('a cancelled command: CANCELLED, whatever else happened, nothing kept', () => {
    const r = exited({ exitCode: 137, timedOut: true, oomKilled: true });
    assert.deepEqual(commandOutcome(r, ctx('action', { cancelled: true })), {
      end: 'cancelled',
      code: Code.CANCELLED,
      message: 'execution cancelled',
      keepWrites: false,
    });
    assert.deepEqual(commandOutcome(r, ctx('run', { cancelled: true })), {
      end: 'cancelled',
      code: Code.CANCELLED,
      message: 'run cancelled; nothing was written back',
      keepWrites: false,
    });
  });
});
