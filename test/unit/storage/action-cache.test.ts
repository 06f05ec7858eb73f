import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { computeDigest, type Digest, SHA256, toWire } from '../../../src/common/digest.js';
import { Code } from '../../../src/common/errors.js';
import { ActionResult, Tree } from '../../../src/proto/build/bazel/remote/execution/v2/remote_execution.js';
import { ActionCache, acKey } from '../../../src/storage/action-cache.js';
import { MemoryBlobStore } from '../../../src/storage/memory-store.js';

function setup() {
  const cas = new MemoryBlobStore(1 << 20);
  const ac = new MemoryBlobStore(1 << 20);
  const put = async (data: Buffer | string): Promise<Digest> => {
    const bytes = Buffer.from(data);
    const d = computeDigest(SHA256, bytes);
    await cas.put(d, bytes);
    return d;
  };
  return { cas, ac, cache: new ActionCache(ac, cas), put };
}

const action = computeDigest(SHA256, Buffer.from('an action'));
const absent = computeDigest(SHA256, Buffer.from('never stored'));

async function rejectsWith(p: Promise<unknown>, code: Code, message: RegExp): Promise<void> {
  await assert.rejects(p, (e: Error & { code?: number }) => {
    assert.equal(e.code, code, e.message);
    assert.match(e.message, message);
    return true;
  });
}

describe('ActionCache', () => {
  it('serves a stored result while every blob it references is in the CAS', async () => {
    const { cache, put } = setup();
    const out = await put('output');
    const stdout = await put('stdout');
    const inTree = await put('in a tree');
    const tree = await put(Buffer.from(Tree.encode(Tree.fromPartial({ root: { files: [{ name: 'f', digest: toWire(inTree) }] } })).finish()));
    const result = ActionResult.fromPartial({
      exitCode: 0,
      outputFiles: [{ path: 'out', digest: toWire(out) }],
      outputDirectories: [{ path: 'dir', treeDigest: toWire(tree) }],
      stdoutDigest: toWire(stdout),
    });
    await cache.put('', action, result);
    assert.deepEqual(await cache.get('', action), result);
    assert.deepEqual(await cache.find('', action), result);
  });

  it('answers NOT_FOUND saying why: no entry, or an entry whose blobs are gone', async () => {
    const { cache, put } = setup();
    await rejectsWith(cache.get('', action), Code.NOT_FOUND, /no action result for action/);
    assert.equal(await cache.find('', action), undefined);

    await cache.put('', action, ActionResult.fromPartial({ stdoutDigest: toWire(absent) }));
    await rejectsWith(cache.get('', action), Code.NOT_FOUND, new RegExp(`refers to 1 blob\\(s\\) no longer in the CAS \\(e.g. ${absent.hash}`));
    assert.equal(await cache.find('', action), undefined);

    await cache.put('', action, ActionResult.fromPartial({ outputDirectories: [{ path: 'd', treeDigest: toWire(absent) }] }));
    await rejectsWith(cache.get('', action), Code.NOT_FOUND, /no longer in the CAS/);

    const tree = await put(Buffer.from(Tree.encode(Tree.fromPartial({ children: [{ files: [{ name: 'gone', digest: toWire(absent) }] }] })).finish()));
    await cache.put('', action, ActionResult.fromPartial({ outputDirectories: [{ path: 'd', treeDigest: toWire(tree) }] }));
    await rejectsWith(cache.get('', action), Code.NOT_FOUND, /no longer in the CAS/);
    assert.equal(await cache.find('', action), undefined);
  });

  it('refuses an output tree that is not a Tree with INVALID_ARGUMENT, also from find', async () => {
    const { cache, put } = setup();
    const notATree = await put(Buffer.from([0xff, 0xff, 0xff, 0xff]));
    await cache.put('', action, ActionResult.fromPartial({ outputDirectories: [{ path: 'd', treeDigest: toWire(notATree) }] }));
    await rejectsWith(cache.get('', action), Code.INVALID_ARGUMENT, /is not a Tree message/);
    await rejectsWith(cache.find('', action), Code.INVALID_ARGUMENT, /is not a Tree message/);
  });

  it('refuses to store a result with a malformed digest', async () => {
    const { cache, ac } = setup();
    await rejectsWith(
      cache.put('', action, ActionResult.fromPartial({ outputFiles: [{ path: 'x', digest: { hash: 'not hex', sizeBytes: 1 } }] })),
      Code.INVALID_ARGUMENT,
      /output file "x"/,
    );
    assert.equal((await ac.findMissing([acKey('', action)])).length, 1, 'nothing was written');
    await rejectsWith(cache.get('', action), Code.NOT_FOUND, /no action result/);
  });

  it('keeps each instance to its own entries', async () => {
    const { cache } = setup();
    await cache.put('a', action, ActionResult.fromPartial({ exitCode: 0, stdoutRaw: Buffer.from('of a') }));
    assert.equal(await cache.find('', action), undefined);
    assert.equal(await cache.find('b', action), undefined);
    assert.equal(Buffer.from((await cache.get('a', action)).stdoutRaw).toString(), 'of a');
  });
});
