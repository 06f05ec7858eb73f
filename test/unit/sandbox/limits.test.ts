import assert from 'node:assert/strict';
import { chmodSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { BwrapSandbox } from '../../../src/sandbox/bwrap-sandbox.js';
import type { SandboxSpec } from '../../../src/sandbox/sandbox.js';
import { tmpDir } from '../../../support/tmp.js';
import { type FileSpec, fileSpec } from '../../../support/sandbox-spec.js';

const KiB = 1024;
const MiB = 1024 * KiB;

const spec = (script: string, over: Partial<SandboxSpec> = {}): FileSpec => fileSpec(script, over);

const size = (p: string) => statSync(p).size;
const errOut = (s: FileSpec) => readFileSync(s.stderrPath, 'utf8');

describe('sandbox limits (each with a positive control just under it)', () => {
  describe('stdout and stderr caps', () => {
    const sb = new BwrapSandbox({ maxStdoutBytes: MiB, maxStderrBytes: 64 * KiB });

    it('output up to the cap is kept whole', async () => {
      const s = spec(`head -c ${MiB} /dev/zero; head -c ${64 * KiB} /dev/zero >&2`);
      const r = await sb.run(s);
      assert.equal(r.exitCode, 0);
      assert.equal(r.limitExceeded, undefined);
      assert.equal(size(s.stdoutPath), MiB);
      assert.equal(size(s.stderrPath), 64 * KiB);
    });

    it('one byte over the stdout cap kills the action, keeps the first cap bytes and names the cap', async () => {
      const s = spec(`head -c ${MiB + 1} /dev/zero; sleep 20`);
      const r = await sb.run(s);
      assert.deepEqual(r.limitExceeded && { limit: r.limitExceeded.limit, max: r.limitExceeded.max }, { limit: 'stdout-bytes', max: MiB });
      assert.match(r.limitExceeded!.message, /stdout exceeded the cap of 1 MiB/);
      assert.notEqual(r.exitCode, 0);
      assert.equal(r.timedOut, false);
      assert.equal(size(s.stdoutPath), MiB);
      assert.match(errOut(s), /stdout exceeded the cap of 1 MiB \[limit stdout-bytes\]/, 'the reason is where a build shows it');
    });

    it('endless output is stopped at the cap, not at the timeout', async () => {
      const s = spec('yes', { timeoutMs: 60_000 });
      const t = Date.now();
      const r = await sb.run(s);
      assert.ok(Date.now() - t < 10_000);
      assert.equal(r.limitExceeded?.limit, 'stdout-bytes');
      assert.equal(size(s.stdoutPath), MiB);
    });

    it('stderr has its own cap', async () => {
      const s = spec(`head -c ${64 * KiB + 1} /dev/zero >&2; sleep 20`);
      const r = await sb.run(s);
      assert.equal(r.limitExceeded?.limit, 'stderr-bytes');
      assert.equal(r.limitExceeded?.max, 64 * KiB);
      assert.equal(
        readFileSync(s.stderrPath)
          .subarray(0, 64 * KiB + 1)
          .at(-1),
        '\n'.charCodeAt(0),
        'cut at the cap, then the reason',
      );
    });
  });

  describe('bytes and files stored', () => {
    const sb = new BwrapSandbox({ maxWriteBytes: 8 * MiB, maxWriteEntries: 200, writeCheckIntervalMs: 100 });
    const writeMiB = (file: string, n: number) => `head -c ${n * MiB} /dev/zero > ${file}`;

    it('writing up to the cap is allowed, and root-owned inputs bigger than the cap do not count', async () => {
      const s = spec(`mkdir -p out/sub && for i in 1 2 3 4 5 6; do ${writeMiB('out/sub/f$i', 1)}; done && ${writeMiB('one', 1)}`);
      writeFileSync(path.join(s.rootDir, 'input.bin'), Buffer.alloc(20 * MiB, 1));
      chmodSync(path.join(s.rootDir, 'input.bin'), 0o444);
      const r = await sb.run(s);
      assert.equal(r.exitCode, 0, errOut(s));
      assert.equal(r.limitExceeded, undefined);
      assert.equal(size(path.join(s.rootDir, 'out', 'sub', 'f6')), MiB);
    });

    it('one file over the cap stops at the cap (file size limit) and is reported', async () => {
      const s = spec(writeMiB('big', 9));
      const r = await sb.run(s);
      assert.notEqual(r.exitCode, 0);
      assert.equal(r.limitExceeded?.limit, 'write-bytes');
      assert.match(r.limitExceeded!.message, /cap of 8 MiB/);
      assert.ok(size(path.join(s.rootDir, 'big')) <= 8 * MiB + 512);
    });

    it('files over the cap in total are reported even when the action exits before a check', async () => {
      // No periodic check can fall inside this action (a loaded machine made
      // one, at 100 ms, kill it): only the check after its exit is tested here.
      const finalCheckOnly = new BwrapSandbox({ maxWriteBytes: 8 * MiB, maxWriteEntries: 200, writeCheckIntervalMs: 600_000 });
      const s = spec(`mkdir d && ${writeMiB('d/a', 3)} && ${writeMiB('d/b', 3)} && ${writeMiB('c', 3)}`);
      const r = await finalCheckOnly.run(s);
      assert.equal(r.exitCode, 0, 'it finished');
      assert.equal(r.limitExceeded?.limit, 'write-bytes', 'but its result must fail');
      assert.match(r.limitExceeded!.message, /failed: it wrote more than the cap of 8 MiB/);
    });

    it('an action over the cap is killed while it runs, not at its timeout', async () => {
      const s = spec(`${writeMiB('a', 3)} && ${writeMiB('b', 3)} && ${writeMiB('c', 3)} && sleep 60`, { timeoutMs: 60_000 });
      const t = Date.now();
      const r = await sb.run(s);
      assert.ok(Date.now() - t < 10_000, `took ${Date.now() - t} ms`);
      assert.equal(r.timedOut, false);
      assert.equal(r.limitExceeded?.limit, 'write-bytes');
      assert.match(r.limitExceeded!.message, /was killed/);
    });

    it('files deleted but held open count while the action runs', async () => {
      const hold = (n: number, sleep: number) => `exec 3>a 4>b; rm a b; head -c ${n * MiB} /dev/zero >&3; head -c ${n * MiB} /dev/zero >&4; sleep ${sleep}`;
      const under = await sb.run(spec(hold(3, 2)));
      assert.equal(under.limitExceeded, undefined);
      assert.equal(under.exitCode, 0);
      const s = spec(hold(5, 60), { timeoutMs: 60_000 });
      const t = Date.now();
      const over = await sb.run(s);
      assert.equal(over.limitExceeded?.limit, 'write-bytes');
      assert.ok(Date.now() - t < 10_000);
    });

    it('writes through a bind count where the caller says they land (writableDirs)', async () => {
      const bound = (script: string) => {
        const host = tmpDir('repr-lim-bind-');
        chmodSync(host, 0o777);
        return { ...spec(script, { binds: [{ host, path: '/work/src' }], writableDirs: [host] }), rootDir: undefined, workingDirectory: '/work/src' };
      };
      const under = await sb.run(bound(`${writeMiB('a', 3)} && ${writeMiB('b', 3)}`));
      assert.equal(under.exitCode, 0);
      assert.equal(under.limitExceeded, undefined);
      const over = await sb.run(bound(`${writeMiB('a', 3)} && ${writeMiB('b', 3)} && ${writeMiB('c', 3)}`));
      assert.equal(over.limitExceeded?.limit, 'write-bytes');
    });

    it('creating files: up to the cap is allowed, past it refused', async () => {
      const make = (n: number) => `mkdir d && for i in $(seq 2 ${n}); do : > d/f$i; done`;
      const ok = await sb.run(spec(make(200)));
      assert.equal(ok.limitExceeded, undefined);
      const over = await sb.run(spec(make(201)));
      assert.equal(over.limitExceeded?.limit, 'write-entries');
      assert.match(over.limitExceeded!.message, /cap of 200 files/);
    });
  });

  describe('memory and /tmp', () => {
    const sb = new BwrapSandbox({ defaultMemoryBytes: 64 * MiB });

    it('an action that asks for no memory limit gets the default one', async () => {
      const under = spec('dd if=/dev/zero of=/dev/null bs=16M count=1 2>/dev/null && echo ok');
      const ur = await sb.run(under);
      assert.equal(ur.exitCode, 0);
      assert.equal(ur.memoryLimitBytes, 64 * MiB);
      const over = spec('dd if=/dev/zero of=/dev/null bs=200M count=1 && echo survived');
      const r = await sb.run(over);
      assert.equal(r.oomKilled, true);
      assert.equal(r.memoryLimitBytes, 64 * MiB);
      assert.doesNotMatch(readFileSync(over.stdoutPath, 'utf8'), /survived/);
    });

    it('an action’s own memory limit wins over the default', async () => {
      const r = await sb.run(spec('dd if=/dev/zero of=/dev/null bs=100M count=1 2>/dev/null', { limits: { memoryBytes: 256 * MiB } }));
      assert.equal(r.exitCode, 0);
      assert.equal(r.memoryLimitBytes, 256 * MiB);
    });

    it('/tmp is a bounded tmpfs: its memory limit by default, or the size configured', async () => {
      assert.equal(
        sb
          .bwrapArgs(spec('true'))
          .join(' ')
          .includes(`--size ${64 * MiB} --tmpfs /tmp`),
        true,
      );
      const small = new BwrapSandbox({ tmpBytes: 4 * MiB });
      const s = spec('head -c 3M /dev/zero > /tmp/a && echo under; head -c 2M /dev/zero > /tmp/b && echo over');
      await small.run(s);
      assert.equal(readFileSync(s.stdoutPath, 'utf8'), 'under\n');
      assert.match(errOut(s), /No space left on device/);
    });
  });
});
