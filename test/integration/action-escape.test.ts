import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fromWire, SHA256 } from '../../src/common/digest.js';
import { Code } from '../../src/common/errors.js';
import { ReapiClient } from '../../src/reapi/reapi-client.js';
import { ExecClient } from '../../src/client/execution-client.js';
import type { ExecuteResponse } from '../../src/proto/build/bazel/remote/execution/v2/remote_execution.js';
import { type ServerProcess, spawnWorker, startServerProcess, type WorkerProcess } from '../../support/servers.js';
import { tmpDir } from '../../support/tmp.js';
import { resultBlobs, type TreeSpec, uploadRawAction } from '../../support/actions.js';

// An attacker who may call Execute tries to make the executor, which runs as
// root on the host, read or create host files through symlinks in the input
// root, made by the action, or in the working directory. The host's secret
// lives in a directory the sandbox does not show (its /tmp is private), so
// only the privileged side could ever reach it.
const secret = `TOP-SECRET-${randomBytes(8).toString('hex')}`;
const hostDir = tmpDir('repr-host-secret-');
writeFileSync(path.join(hostDir, 'secret.txt'), secret);
mkdirSync(path.join(hostDir, 'sub'));
writeFileSync(path.join(hostDir, 'sub', 'inner.txt'), secret);

for (const mode of ['built-in executors', 'a repr worker'] as const) {
  describe(`an action cannot reach outside its input root (${mode})`, () => {
    let server: ServerProcess;
    let worker: WorkerProcess | undefined;
    let client: ReapiClient;
    let exec: ExecClient;

    before(async () => {
      if (mode === 'built-in executors') {
        server = await startServerProcess(['--data-dir', tmpDir('repr-escape-'), '--executors', '2']);
      } else {
        server = await startServerProcess(['--data-dir', tmpDir('repr-escape-sched-'), '--executors', '0']);
        worker = await spawnWorker(server.url, ['--name', 'escape-w', '--data-dir', tmpDir('repr-escape-w-'), '--executors', '2']);
      }
      client = new ReapiClient({ target: server.address });
      exec = new ExecClient(server.address);
    });
    after(async () => {
      client.close();
      exec.close();
      await worker?.stop();
      await server.stop();
    });

    const run = async (root: TreeSpec, command: Parameters<typeof uploadRawAction>[1]['command']): Promise<ExecuteResponse> => {
      const digest = await uploadRawAction(client, { root, command });
      const r = await exec.execute(digest, { skipCacheLookup: true });
      assert.ok(r.response, 'the operation completed');
      return r.response;
    };
    const assertNoSecret = async (res: ExecuteResponse) => {
      if (!res.result) return;
      for (const b of await resultBlobs(client, res.result)) assert.ok(!b.toString('latin1').includes(secret), 'no host secret in the result');
      const hostEnv = `${process.env.PATH}`;
      for (const f of res.result.outputFiles) {
        const b = (await client.read(fromWire(SHA256, f.digest))).toString('latin1');
        assert.ok(!b.includes('--data-dir') && !(b.includes(hostEnv) && b.includes('\0')), `${f.path} is not the host's command line or environment`);
      }
    };

    it('output files and directories behind an input symlink to a host directory are absent', async () => {
      const res = await run(
        { e: { symlink: hostDir }, p: { symlink: '/proc/self' } },
        { arguments: ['/bin/true'], outputFiles: ['e/secret.txt', 'p/environ', 'p/cmdline'], outputDirectories: ['e/sub'] },
      );
      assert.equal(res.status?.code ?? 0, Code.OK, res.status?.message);
      assert.deepEqual(
        res.result!.outputFiles.map((f) => f.path),
        [],
      );
      assert.deepEqual(
        res.result!.outputDirectories.map((d) => d.path),
        [],
      );
      await assertNoSecret(res);
    });

    it('output_paths (REAPI 2.1) through a symlink are absent too, and a symlink output is reported as a symlink', async () => {
      const res = await run({ e: { symlink: hostDir } }, { arguments: ['/bin/true'], outputPaths: ['e/secret.txt', 'e/sub', 'e'] });
      assert.deepEqual(res.result!.outputFiles, []);
      assert.deepEqual(res.result!.outputDirectories, []);
      assert.deepEqual(
        res.result!.outputSymlinks.map((s) => [s.path, s.target]),
        [['e', hostDir]],
      );
      await assertNoSecret(res);
    });

    it('a symlink the action makes itself is not followed by output collection', async () => {
      const res = await run(
        {},
        {
          arguments: ['/bin/sh', '-c', `rm -rf x y && ln -s ${hostDir} x && ln -s /proc/1 y`],
          outputFiles: ['x/secret.txt', 'y/environ'],
          outputDirectories: ['x/sub'],
        },
      );
      assert.equal(res.result!.exitCode, 0);
      assert.deepEqual(res.result!.outputFiles, []);
      assert.deepEqual(res.result!.outputDirectories, []);
      await assertNoSecret(res);
    });

    it('a directory output holding symlinks to the host reports them as symlinks and reads nothing through them', async () => {
      const res = await run(
        {},
        {
          arguments: ['/bin/sh', '-c', `mkdir -p out/d && ln -s ${hostDir} out/d/h && ln -s ${hostDir}/secret.txt out/f && echo mine > out/own`],
          outputDirectories: ['out'],
        },
      );
      assert.equal(res.result!.outputDirectories.length, 1);
      await assertNoSecret(res);
    });

    it('a working directory that is a symlink out of the root is refused', async () => {
      const res = await run(
        { w: { symlink: hostDir } },
        { arguments: ['/bin/true'], workingDirectory: 'w', outputFiles: ['secret.txt'], outputDirectories: ['sub'] },
      );
      assert.equal(res.status?.code, Code.INVALID_ARGUMENT, res.status?.message);
      assert.match(res.status!.message, /working_directory "w"/);
      await assertNoSecret(res);
    });

    it('output parents are never created through a symlink out of the root', async () => {
      const target = tmpDir('repr-host-target-');
      const res = await run({ t: { symlink: target } }, { arguments: ['/bin/true'], outputFiles: ['t/X/x'], outputDirectories: ['t/Y'] });
      assert.equal(res.status?.code ?? 0, Code.OK, res.status?.message);
      assert.deepEqual(readdirSync(target), [], 'nothing was created in the host directory');
      assert.ok(!existsSync(path.join(target, 'X')));
    });

    it('symlinks that stay inside the root are followed as the action sees them (relative and absolute)', async () => {
      const res = await run(
        { real: { keep: 'k' }, rel: { symlink: 'real' }, abs: { symlink: '/b/r/real' }, w: { sub: { up: { symlink: '../../real' } } } },
        {
          arguments: ['/bin/sh', '-c', 'echo one > real/one.txt && mkdir -p real/dir && echo two > real/dir/two.txt && echo three > real/three.txt'],
          outputFiles: ['rel/one.txt', 'abs/three.txt', 'w/sub/up/one.txt'],
          outputDirectories: ['abs/dir'],
        },
      );
      assert.equal(res.result!.exitCode, 0);
      assert.deepEqual(res.result!.outputFiles.map((f) => f.path).sort(), ['abs/three.txt', 'rel/one.txt', 'w/sub/up/one.txt']);
      const one = res.result!.outputFiles.find((f) => f.path === 'rel/one.txt')!;
      assert.equal((await client.read(fromWire(SHA256, one.digest))).toString(), 'one\n');
      assert.deepEqual(
        res.result!.outputDirectories.map((d) => d.path),
        ['abs/dir'],
      );
    });

    it('output parents inside the root are created, also behind an in-root symlink', async () => {
      const res = await run(
        { real: { keep: 'k' }, l: { symlink: 'real' } },
        { arguments: ['/bin/sh', '-c', 'echo a > l/new/a.txt && echo b > deep/er/b.txt'], outputFiles: ['l/new/a.txt', 'deep/er/b.txt'] },
      );
      assert.equal(res.result!.exitCode, 0);
      assert.deepEqual(res.result!.outputFiles.map((f) => f.path).sort(), ['deep/er/b.txt', 'l/new/a.txt']);
    });
  });
}
