import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { computeDigest, SHA256 } from '../../../src/common/digest.js';
import { readAll } from '../../../src/storage/blob-store.js';
import type { StoreMeter } from '../../../src/storage/metered-store.js';
import { createStore } from '../../../src/storage/store-factory.js';
import { tmpDir } from '../../../support/tmp.js';
import { blobStoreContract } from './contract.js';

const LIMIT = 1024 * 1024;

/** A meter that keeps what it is told. */
function recordingMeter() {
  const m = {
    read: [] as number[],
    written: [] as number[],
    evicted: [] as [string, number][],
    tiers: new Map<string, () => { bytes: number; blobs: number }>(),
  };
  const meter: StoreMeter = {
    read: (b) => m.read.push(b),
    written: (b) => m.written.push(b),
    evicted: (tier, b) => m.evicted.push([tier, b]),
    holds: (tier, size) => m.tiers.set(tier, size),
  };
  return { m, meter };
}

// The server's default CAS shape, metered: metering must not change what the store does.
blobStoreContract('metered verifying(read-caching(memory over disk)), built from config', { limitBytes: LIMIT, persistent: true }, async () => {
  const directory = tmpDir();
  const open = () =>
    createStore(
      {
        type: 'verifying',
        backend: {
          type: 'read-caching',
          maxBlobBytes: LIMIT,
          fast: { type: 'memory', limitBytes: LIMIT / 4 },
          slow: { type: 'disk', directory, limitBytes: LIMIT, fsync: false },
        },
      },
      recordingMeter().meter,
    );
  return { store: await open(), reopen: open };
});

describe('a metered store tree', () => {
  it('counts reads, writes, holdings and evictions by tier', async () => {
    const { m, meter } = recordingMeter();
    const store = await createStore(
      {
        type: 'read-caching',
        maxBlobBytes: LIMIT,
        fast: { type: 'memory', limitBytes: 3000 },
        slow: { type: 'disk', directory: tmpDir(), limitBytes: 10_000, fsync: false },
      },
      meter,
    );
    assert.deepEqual([...m.tiers.keys()], ['fast', 'slow']);
    const blobs = Array.from({ length: 4 }, (_, i) => Buffer.alloc(1000 + i, i));
    const digests = blobs.map((b) => computeDigest(SHA256, b));
    for (const [i, b] of blobs.entries()) await store.put(digests[i]!, b);
    const w = store.beginWrite(computeDigest(SHA256, Buffer.alloc(500, 9)));
    await w.write(Buffer.alloc(500, 9));
    await w.commit();
    assert.deepEqual(m.written, [1000, 1001, 1002, 1003, 500]);

    await store.get(digests[3]!);
    await readAll(await store.read(digests[2]!, 2, 100));
    await readAll(await store.read(digests[1]!, 1));
    assert.deepEqual(m.read, [1003, 100, 1000]);

    assert.deepEqual(m.tiers.get('slow')!(), { bytes: 4506, blobs: 5 });
    const fast = m.tiers.get('fast')!();
    assert.ok(fast.bytes <= 3000, `the fast tier stays under its limit (${fast.bytes})`);
    assert.ok(m.evicted.length > 0 && m.evicted.every(([tier]) => tier === 'fast'), JSON.stringify(m.evicted));
    await store.close?.();
  });
});
