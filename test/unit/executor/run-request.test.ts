import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { SHA256 } from '../../../src/common/digest.js';
import { Code, codeOf } from '../../../src/common/errors.js';
import { type Node, Node_Kind, type RunRequest } from '../../../src/proto/repr/run/v1/run.js';
import { FuseTree, TreeError } from '../../../src/vfs/fuse-tree.js';
import { MAX_LISTING_ENTRIES, nodeFromWire } from '../../../src/vfs/nodes.js';
import { checkRoots } from '../../../src/vfs/paths.js';
import { PendingQueries } from '../../../src/executor/pending-queries.js';
import { RUN_REQUEST_LIMITS } from '../../../src/executor/run-request.js';
import type { VNode } from '../../../src/vfs/vfs.js';
import { tmpDir } from '../../../support/tmp.js';
import { checkRunRequest } from '../../../src/executor/run-request.js';

/*
 * What the server accepts from a client it does not trust: every field of a
 * RunRequest and of the client's answers is checked and bounded before the
 * worker acts on it.
 */

const request = (partial: Partial<RunRequest> = {}): RunRequest => ({
  runId: 'r',
  arguments: ['/bin/true'],
  environmentVariables: [],
  workingDirectory: '/home/u/proj',
  roots: ['/home/u/proj'],
  mappings: [],
  instanceName: '',
  digestFunction: SHA256.value,
  platform: [],
  timeoutMs: 0,
  ...partial,
});

const node = (partial: Partial<Node>): Node => ({
  kind: Node_Kind.FILE,
  digest: undefined,
  size: 0,
  executable: false,
  symlinkTarget: '',
  mtimeMs: 0,
  listed: false,
  entries: [],
  mode: 0,
  ...partial,
});

function refused(f: () => unknown, pattern: RegExp): void {
  assert.throws(f, (e: unknown) => {
    assert.equal(codeOf(e), Code.INVALID_ARGUMENT, (e as Error).message);
    assert.match((e as Error).message, pattern);
    return true;
  });
}

describe('checkRunRequest', () => {
  it('accepts a plain request and a working directory below a root', () => {
    checkRunRequest(request());
    checkRunRequest(request({ workingDirectory: '/home/u/proj/src/deep', roots: ['/home/u/other', '/home/u/proj'] }));
  });

  it('refuses a working directory outside every root, naming it and the roots', () => {
    for (const wd of ['/', '/home/u', '/home/u/project', '/root', '/tmp']) {
      refused(
        () => checkRunRequest(request({ workingDirectory: wd, roots: ['/home/u/proj', '/srv/x'] })),
        new RegExp(`working_directory ${wd} is not inside a root \\(roots: /home/u/proj, /srv/x\\)`),
      );
    }
    refused(() => checkRunRequest(request({ workingDirectory: '/home/u/proj/../../etc' })), /working_directory must be an absolute, normalized path/);
    refused(() => checkRunRequest(request({ workingDirectory: 'proj' })), /working_directory must be an absolute/);
  });

  it('refuses roots that are not absolute, normalized directories clear of the sandbox', () => {
    for (const [root, pattern] of [
      ['/home/u/../../etc', /normalized/],
      ['/home/u/./proj', /normalized/],
      ['/home//u', /normalized/],
      ['/home/u/', /normalized/],
      ['/', /too broad/],
      ['/tmp', /too broad/],
      ['/proc/self', /overlaps \/proc/],
      ['/dev', /overlaps \/dev/],
      ['/usr/src', /overlaps \/usr/],
      ['/etc', /overlaps \/etc/],
      ['/sys/fs', /overlaps \/sys/],
      [`/home/${'x'.repeat(256)}`, /component longer than 255 bytes/],
      [`/home/${'x/'.repeat(2100)}x`, /longer than 4095 bytes/],
      ['/home/a\0b', /normalized/],
    ] as const) {
      refused(() => checkRoots([root]), pattern);
    }
    refused(() => checkRoots(Array.from({ length: 65 }, (_, i) => `/home/p${i}`)), /at most 64 roots/);
    assert.deepEqual(checkRoots(['/tmp/build/p']), ['/tmp/build/p']);
  });

  it('bounds the command, its environment and the other fields', () => {
    const L = RUN_REQUEST_LIMITS;
    refused(() => checkRunRequest(request({ runId: 'x'.repeat(L.runIdBytes + 1) })), /run_id is longer/);
    refused(() => checkRunRequest(request({ arguments: ['/bin/echo', 'a\0b'] })), /argument 1 holds a NUL/);
    refused(() => checkRunRequest(request({ arguments: ['/bin/echo', 'x'.repeat(L.argBytes)] })), /argument 1 is longer/);
    refused(() => checkRunRequest(request({ arguments: Array.from({ length: L.arguments + 1 }, () => 'a') })), /at most 65536 arguments/);
    refused(() => checkRunRequest(request({ arguments: ['/bin/echo', ...Array.from({ length: 20 }, () => 'x'.repeat(120_000))] })), /add up to/);
    refused(() => checkRunRequest(request({ environmentVariables: [{ name: 'A=B', value: '' }] })), /holds '='/);
    refused(() => checkRunRequest(request({ environmentVariables: [{ name: '', value: 'x' }] })), /is empty/);
    refused(() => checkRunRequest(request({ environmentVariables: [{ name: 'A', value: 'a\0' }] })), /NUL/);
    refused(
      () => checkRunRequest(request({ environmentVariables: Array.from({ length: L.environmentVariables + 1 }, (_, i) => ({ name: `V${i}`, value: '' })) })),
      /at most 4096 environment/,
    );
    refused(() => checkRunRequest(request({ timeoutMs: -1 })), /timeout_ms -1 is negative/);
    refused(
      () => checkRunRequest(request({ platform: Array.from({ length: L.platformProperties + 1 }, (_, i) => ({ name: `p${i}`, value: '' })) })),
      /at most 64 platform/,
    );
    refused(() => checkRunRequest(request({ platform: [{ name: 'pool', value: 'x'.repeat(L.platformBytes) }] })), /platform property pool is longer/);
    refused(() => checkRunRequest(request({ instanceName: 'x'.repeat(L.instanceNameBytes + 1) })), /instance_name is longer/);
  });

  it('bounds the mappings and checks what they say', () => {
    const dir = (entries: number) =>
      node({ kind: Node_Kind.DIRECTORY, listed: true, entries: Array.from({ length: entries }, (_, i) => ({ name: `f${i}`, node: node({ size: 1 }) })) });
    refused(
      () => checkRunRequest(request({ mappings: [{ path: '/home/u/proj', node: dir(RUN_REQUEST_LIMITS.mappedNodes) }] })),
      /more than \d+ paths and listing entries/,
    );
    refused(() => checkRunRequest(request({ mappings: [{ path: '/home/u/proj/../x', node: node({}) }] })), /mapping path must be an absolute, normalized path/);
    refused(
      () => checkRunRequest(request({ mappings: [{ path: '/home/u/proj/l', node: node({ kind: Node_Kind.SYMLINK, symlinkTarget: 'x'.repeat(5000) }) }] })),
      /symlink target/,
    );
  });
});

describe('nodeFromWire', () => {
  const fn = SHA256;

  it('refuses names, sizes, times and targets no file system has', () => {
    const listing = (names: string[]) => node({ kind: Node_Kind.DIRECTORY, listed: true, entries: names.map((name) => ({ name, node: node({}) })) });
    for (const name of ['', '.', '..', 'a/b', 'a\0b', 'x'.repeat(256)]) refused(() => nodeFromWire(fn, listing([name]), 'answer'), /bad entry name/);
    refused(() => nodeFromWire(fn, listing(['a', 'a']), 'answer'), /listed twice/);
    refused(() => nodeFromWire(fn, node({ size: -1 }), 'answer'), /size -1/);
    refused(() => nodeFromWire(fn, node({ size: 1.5 }), 'answer'), /size 1.5/);
    refused(() => nodeFromWire(fn, node({ mtimeMs: 9e15 }), 'answer'), /mtime_ms/);
    refused(() => nodeFromWire(fn, node({ kind: Node_Kind.SYMLINK, symlinkTarget: 'a\0b' }), 'answer'), /symlink target/);
    refused(() => nodeFromWire(fn, node({ kind: Node_Kind.SYMLINK, symlinkTarget: 'x'.repeat(4096) }), 'answer'), /symlink target/);
    refused(() => nodeFromWire(fn, node({ digest: { hash: '../../etc/passwd', sizeBytes: 1 } }), 'answer'), /hash/);
    const big = node({ kind: Node_Kind.DIRECTORY, listed: true });
    big.entries = { length: MAX_LISTING_ENTRIES + 1, map: () => assert.fail('entries read before the count was checked') } as unknown as Node['entries'];
    refused(() => nodeFromWire(fn, big, 'answer'), /over the limit/);
    assert.equal(nodeFromWire(fn, node({ kind: Node_Kind.SYMLINK, symlinkTarget: '/etc' }), 'answer').target, '/etc');
    assert.equal(nodeFromWire(fn, listing(['x'.repeat(255)]), 'answer').entries?.length, 1);
  });

  it("refuses a mode that is not a file's permission bits, and shows no setuid file", () => {
    refused(() => nodeFromWire(fn, node({ size: 1, mode: 0o100644 }), 'answer'), /mode 100644 is not a file's permission bits/);
    assert.equal(nodeFromWire(fn, node({ size: 1, mode: 0o4755 }), 'answer').mode, 0o755);
    assert.equal(nodeFromWire(fn, node({ size: 1, mode: 0o640 }), 'answer').mode, 0o640);
  });
});

describe('FuseTree roots', () => {
  it('never takes a root for anything but a directory, whatever the client says', async () => {
    for (const [answer, mapped] of [
      [{ kind: 'symlink', target: '/etc' }, false],
      [{ kind: 'symlink', target: '/etc' }, true],
      [{ kind: 'file', size: 3, hash: 'a'.repeat(64) }, false],
    ] as [VNode, boolean][]) {
      const root = '/home/u/proj';
      const tree = new FuseTree({
        roots: [root],
        mappings: mapped ? [{ path: root, node: answer }] : [],
        uid: 1,
        gid: 1,
        scratchDir: tmpDir('repr-tree-root-'),
        query: async () => answer,
        fetch: async () => assert.fail('nothing to fetch'),
      });
      await assert.rejects(tree.getattr(root), (e: unknown) => e instanceof TreeError && e.errno === 'ENOENT');
      await assert.rejects(tree.readlink(root), (e: unknown) => e instanceof TreeError && e.errno === 'ENOENT');
      await assert.rejects(tree.getattr(`${root}/passwd`), (e: unknown) => e instanceof TreeError && e.errno === 'ENOENT');
    }
  });
});

describe('PendingQueries', () => {
  it('keeps only the start of a long error message from the client', async () => {
    const q = new PendingQueries(() => undefined, new AbortController().signal, 'client: ');
    const asked = q.ask('/p', false);
    q.settle({ runId: 'r', queryId: 1, node: undefined, error: { code: Code.PERMISSION_DENIED, message: 'x'.repeat(1_000_000), details: [] } });
    await assert.rejects(asked, (e: unknown) => codeOf(e) === Code.PERMISSION_DENIED && (e as Error).message.length < 1100);
  });
});
