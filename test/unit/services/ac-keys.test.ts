import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { acKey } from '../../../src/storage/action-cache.js';
import { BLAKE3, computeDigest, type Digest, makeDigest, SHA256 } from '../../../src/common/digest.js';
import { Code } from '../../../src/common/errors.js';
import { ReapiClient } from '../../../src/reapi/reapi-client.js';
import { ActionResult } from '../../../src/proto/build/bazel/remote/execution/v2/remote_execution.js';
import type { ReprServer } from '../../../src/server/server.js';
import { DiskBlobStore } from '../../../src/storage/disk-store.js';
import { startInProcess } from '../../../support/servers.js';
import { tmpDir } from '../../../support/tmp.js';

const INSTANCES = ['', 'a'];

/** A result that references no blobs, so the CAS check cannot be what hides it. */
function forged(marker: string): ActionResult {
  return ActionResult.fromPartial({ exitCode: 0, stdoutRaw: Buffer.from(marker) });
}

/** How keys of named instances were computed before instance "" was hashed too. */
function legacyKey(instance: string, action: Digest): Digest {
  const hash = createHash('sha256').update(`${instance}\0${action.fn.name}/${action.hash}/${action.sizeBytes}`).digest('hex');
  return makeDigest(action.fn, hash, action.sizeBytes);
}

async function notFound(p: Promise<unknown>): Promise<void> {
  await assert.rejects(p, (e: Error & { code?: number }) => {
    assert.equal(e.code, Code.NOT_FOUND, `expected NOT_FOUND, got ${e.code}: ${e.message}`);
    return true;
  });
}

function clients(server: ReprServer) {
  const empty = new ReapiClient({ target: server.address, instanceName: '' });
  const a = new ReapiClient({ target: server.address, instanceName: 'a' });
  return { empty, a, close: () => (empty.close(), a.close()) };
}

describe('action cache keys across instances', () => {
  it('a client of "" cannot plant a result that instance "a" serves', async () => {
    const server = await startInProcess({ dataDir: tmpDir(), instanceNames: INSTANCES, execution: { enabled: false } });
    const c = clients(server);
    try {
      const victim = computeDigest(SHA256, Buffer.from('the action a client of "a" will ask about'));
      // The attacker knows the key function; both today's and the earlier one are tried.
      await c.empty.updateActionResult(acKey('a', victim), forged('forged via current key'));
      await c.empty.updateActionResult(legacyKey('a', victim), forged('forged via legacy key'));
      await notFound(c.a.getActionResult(victim));

      // The same trick the other way round.
      await c.a.updateActionResult(acKey('', victim), forged('forged into ""'));
      await notFound(c.empty.getActionResult(victim));

      // Each instance still gets what it stored itself, and only that.
      await c.a.updateActionResult(victim, forged('own a'));
      assert.equal(Buffer.from((await c.a.getActionResult(victim)).stdoutRaw).toString(), 'own a');
      await notFound(c.empty.getActionResult(victim));
      await c.empty.updateActionResult(victim, forged('own empty'));
      assert.equal(Buffer.from((await c.empty.getActionResult(victim)).stdoutRaw).toString(), 'own empty');
      assert.equal(Buffer.from((await c.a.getActionResult(victim)).stdoutRaw).toString(), 'own a');
    } finally {
      c.close();
      await server.stop();
    }
  });

  it('keys differ by instance, digest function, hash and size, and never equal the action digest', () => {
    const d = computeDigest(SHA256, Buffer.from('x'));
    const keys = [
      acKey('', d),
      acKey('a', d),
      acKey('a\0', d),
      acKey('', makeDigest(BLAKE3, d.hash, d.sizeBytes)),
      acKey('', makeDigest(SHA256, d.hash, d.sizeBytes + 1)),
    ].map((k) => `${k.fn.name}/${k.hash}/${k.sizeBytes}`);
    assert.equal(new Set(keys).size, keys.length);
    assert.notEqual(acKey('', d).hash, d.hash);
    assert.deepEqual(acKey('a', d), acKey('a', d), 'stable');
  });

  it('drops entries a server with the earlier key format left on disk, once', async () => {
    const dataDir = tmpDir();
    const victim = computeDigest(SHA256, Buffer.from('an action of "a"'));
    // What an attacker could have planted through instance "" before the upgrade,
    // where "" stored under any digest the client named.
    const old = await DiskBlobStore.open({ directory: path.join(dataDir, 'ac'), limitBytes: 1 << 20 });
    await old.put(acKey('a', victim), Buffer.from(ActionResult.encode(forged('planted')).finish()));
    await old.put(legacyKey('a', victim), Buffer.from(ActionResult.encode(forged('planted legacy')).finish()));

    let server = await startInProcess({ dataDir, instanceNames: INSTANCES, execution: { enabled: false } });
    let c = clients(server);
    try {
      await notFound(c.a.getActionResult(victim));
      await c.a.updateActionResult(victim, forged('kept'));
    } finally {
      c.close();
      await server.stop();
    }
    assert.ok(existsSync(path.join(dataDir, 'ac', 'ac-key-format')), 'the store records its key format');

    server = await startInProcess({ dataDir, instanceNames: INSTANCES, execution: { enabled: false } });
    c = clients(server);
    try {
      assert.equal(Buffer.from((await c.a.getActionResult(victim)).stdoutRaw).toString(), 'kept', 'entries of the current format survive a restart');
    } finally {
      c.close();
      await server.stop();
    }
  });
});
