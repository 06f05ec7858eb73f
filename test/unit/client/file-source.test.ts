import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdirSync, symlinkSync, utimesSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { computeDigest, SHA256 } from '../../../src/common/digest.js';
import { Code, ReprError } from '../../../src/common/errors.js';
import { FileSource } from '../../../src/client/file-source.js';
import { applyChanges } from '../../../src/client/run-changes.js';
import { ReapiClient } from '../../../src/reapi/reapi-client.js';
import { Node_Kind } from '../../../src/proto/repr/run/v1/run.js';
import type { ReprServer } from '../../../src/server/server.js';
import { startInProcess } from '../../../support/servers.js';
import { tmpDir } from '../../../support/tmp.js';

describe("repr run's client side: answering questions and applying changes", () => {
  let server: ReprServer;
  let cas: ReapiClient;
  let root: string;

  before(async () => {
    server = await startInProcess({ dataDir: tmpDir('repr-fs-'), execution: { enabled: false } });
    cas = new ReapiClient({ target: server.address });
    root = path.join(tmpDir('repr-fs-root-'), 'proj');
    mkdirSync(path.join(root, 'dir'), { recursive: true });
    writeFileSync(path.join(root, 'a.txt'), 'alpha\n');
    // Written an hour ago: a file written moments before it is hashed is hashed again next time (see HashCache).
    utimesSync(path.join(root, 'a.txt'), new Date(Date.now() - 3600_000), new Date(Date.now() - 3600_000));
    writeFileSync(path.join(root, 'dir', 'b.sh'), '#!/bin/sh\n', { mode: 0o755 });
    symlinkSync('a.txt', path.join(root, 'link'));
  });

  after(async () => {
    cas.close();
    await server.stop();
  });

  it('answers files with their digest (uploaded once, however many ask at once), dirs with listings, missing paths as absent', async () => {
    const fs = new FileSource(cas, SHA256);
    const answers = await Promise.all(Array.from({ length: 5 }, () => fs.answer(path.join(root, 'a.txt'), false, [root])));
    const d = computeDigest(SHA256, Buffer.from('alpha\n'));
    for (const a of answers) {
      assert.equal(a.kind, Node_Kind.FILE);
      assert.deepEqual(a.digest, { hash: d.hash, sizeBytes: 6 });
    }
    assert.equal(fs.stats.uploadedBlobs, 1);
    assert.equal(fs.stats.hashed, 1);
    assert.equal((await cas.read(d)).toString(), 'alpha\n');
    const dir = await fs.answer(root, true, [root]);
    assert.equal(dir.kind, Node_Kind.DIRECTORY);
    assert.equal(dir.listed, true);
    assert.deepEqual(
      dir.entries.map((e) => [e.name, e.node!.kind, e.node!.digest, e.node!.size]),
      [
        ['a.txt', Node_Kind.FILE, { hash: d.hash, sizeBytes: 6 }, 6],
        ['dir', Node_Kind.DIRECTORY, undefined, 0],
        ['link', Node_Kind.SYMLINK, undefined, 0],
      ],
      'a listing carries the digests of its small files',
    );
    assert.equal(fs.stats.hashed, 1, 'a.txt, unchanged, is not hashed again for the listing');
    const sh = await fs.answer(path.join(root, 'dir', 'b.sh'), false, [root]);
    assert.equal(sh.executable, true);
    assert.equal((await fs.answer(path.join(root, 'link'), false, [root])).symlinkTarget, 'a.txt');
    assert.equal((await fs.answer(path.join(root, 'nope', 'x.h'), false, [root])).kind, Node_Kind.ABSENT);
    // A second session finds the blob present and uploads nothing.
    const again = new FileSource(cas, SHA256);
    await again.answer(path.join(root, 'a.txt'), false, [root]);
    assert.equal(again.stats.uploadedBlobs, 0);
    assert.equal(again.stats.presentBlobs, 1);
  });

  it('bounds the digests a listing carries: small regular files only, within a byte and a file budget, each in the CAS', async () => {
    const dir = path.join(root, 'many');
    mkdirSync(path.join(dir, 'sub'), { recursive: true });
    for (let i = 0; i < 80; i++) writeFileSync(path.join(dir, `s${String(i).padStart(2, '0')}`), Buffer.alloc(60_000, i));
    writeFileSync(path.join(dir, 'big'), Buffer.alloc(100 * 1024, 'b'));
    symlinkSync('s00', path.join(dir, 'link'));
    assert.equal(spawnSync('mkfifo', [path.join(dir, 'fifo')]).status, 0);
    const fs = new FileSource(cas, SHA256);
    const listing = await fs.answer(dir, true, [root]);
    const byName = new Map(listing.entries.map((e) => [e.name, e.node!]));
    assert.equal(byName.has('fifo'), false, 'a fifo is not shipped');
    assert.equal(byName.get('link')!.symlinkTarget, 's00');
    assert.equal(byName.get('sub')!.kind, Node_Kind.DIRECTORY);
    assert.deepEqual([byName.get('big')!.digest, byName.get('big')!.size], [undefined, 100 * 1024], 'over 64 KiB: size only');
    const withDigest = listing.entries.filter((e) => e.node!.digest);
    // 4 MiB of 60,000-byte files.
    assert.equal(withDigest.length, Math.floor((4 * 1024 * 1024) / 60_000));
    for (const e of withDigest) assert.equal(e.node!.digest!.hash, computeDigest(SHA256, Buffer.alloc(60_000, Number(e.name.slice(1)))).hash, e.name);
    assert.deepEqual(await cas.findMissing(withDigest.map((e) => ({ fn: SHA256, hash: e.node!.digest!.hash, sizeBytes: 60_000 }))), []);
    assert.equal(fs.stats.hashed, withDigest.length);
    // Mappings list without reading: they are built for every run, and only the files a run used are worth hashing.
    const mapped = await fs.node(dir, true);
    assert.equal(mapped.entries!.filter((e) => e.node.hash).length, 0);

    const empties = path.join(root, 'empties');
    mkdirSync(empties);
    for (let i = 0; i < 2100; i++) writeFileSync(path.join(empties, `e${i}`), '');
    const counted = await new FileSource(cas, SHA256).answer(empties, true, [root]);
    assert.equal(counted.entries.filter((e) => e.node!.digest).length, 2048, 'at most 2048 digests in one listing');
  });

  it('refuses questions about paths outside the roots, also through a symlinked directory', async () => {
    const fs = new FileSource(cas, SHA256);
    const outside = tmpDir('repr-fs-outside-');
    writeFileSync(path.join(outside, 'secret'), 'do not ship\n');
    symlinkSync(outside, path.join(root, 'escape'));
    for (const p of ['/etc/passwd', `${root}/../secret`, `${root}-other/x`, 'relative', `${root}/escape/secret`, `${root}/escape/missing/deeper`]) {
      await assert.rejects(fs.answer(p, false, [root]), (e: unknown) => e instanceof ReprError && e.code === Code.PERMISSION_DENIED, p);
    }
    // The symlink itself is an answer like any other: the mount resolves it on the worker.
    assert.equal((await fs.answer(`${root}/escape`, false, [root])).symlinkTarget, outside);
  });

  it('applies changes atomically and refuses ones outside the roots', async () => {
    const data = Buffer.from('new content\n');
    const d = computeDigest(SHA256, data);
    await cas.batchUpdate([{ digest: d, data }]);
    const file = (p: string, exec = false) => ({
      path: p,
      node: {
        kind: Node_Kind.FILE,
        digest: { hash: d.hash, sizeBytes: d.sizeBytes },
        size: 0,
        executable: exec,
        symlinkTarget: '',
        mtimeMs: 0,
        listed: false,
        entries: [],
        mode: 0,
      },
    });
    const gone = (p: string) => ({
      path: p,
      node: { kind: Node_Kind.ABSENT, digest: undefined, size: 0, executable: false, symlinkTarget: '', mtimeMs: 0, listed: false, entries: [], mode: 0 },
    });
    await applyChanges([file(path.join(root, 'out', 'new.txt'), true), gone(path.join(root, 'dir'))], [root], cas, SHA256);
    const { readFileSync, existsSync, statSync } = await import('node:fs');
    assert.equal(readFileSync(path.join(root, 'out', 'new.txt'), 'utf8'), 'new content\n');
    assert.ok(statSync(path.join(root, 'out', 'new.txt')).mode & 0o100);
    assert.equal(existsSync(path.join(root, 'dir')), false);
    for (const p of ['/tmp/evil.txt', `${root}/../evil.txt`, root]) {
      await assert.rejects(
        applyChanges([file(p)], [root], cas, SHA256),
        (e: unknown) => e instanceof ReprError && (e.code === Code.PERMISSION_DENIED || e.code === Code.INVALID_ARGUMENT),
        p,
      );
    }
    assert.equal(existsSync('/tmp/evil.txt'), false);
    // Not through a symlink left under the root either: not a file, not a new directory, not a removal.
    const outside = tmpDir('repr-fs-target-');
    writeFileSync(path.join(outside, 'keep'), 'keep\n');
    symlinkSync(outside, path.join(root, 'out', 'door'));
    const dir = (p: string) => ({
      path: p,
      node: { kind: Node_Kind.DIRECTORY, digest: undefined, size: 0, executable: false, symlinkTarget: '', mtimeMs: 0, listed: false, entries: [], mode: 0 },
    });
    for (const change of [
      file(path.join(root, 'out', 'door', 'evil.txt')),
      file(path.join(root, 'out', 'door', 'new', 'evil.txt')),
      dir(path.join(root, 'out', 'door', 'newdir')),
      gone(path.join(root, 'out', 'door', 'keep')),
    ]) {
      await assert.rejects(
        applyChanges([change], [root], cas, SHA256),
        (e: unknown) => e instanceof ReprError && e.code === Code.PERMISSION_DENIED,
        change.path,
      );
    }
    const { readdirSync } = await import('node:fs');
    assert.deepEqual(readdirSync(outside), ['keep']);
  });
});
