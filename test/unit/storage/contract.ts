import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { BLAKE3, computeDigest, type Digest, SHA256 } from '../../../src/common/digest.js';
import { Code, codeOf } from '../../../src/common/errors.js';
import { readAll, type BlobStore, whenIndexed } from '../../../src/storage/blob-store.js';
import { VerifyingBlobStore } from '../../../src/storage/verifying-store.js';

export interface ContractSubject {
  store: BlobStore;
  /** Opens the store again on the same data (persistent backends). */
  reopen?: () => Promise<BlobStore>;
}

export interface ContractTraits {
  /** The store's size limit, for stores that evict. */
  limitBytes?: number;
  /** The store keeps its data across a reopen; `make` must then supply `reopen`. */
  persistent?: boolean;
}

const blob = (s: string) => Buffer.from(s);
const digestOf = (b: Buffer, fn = SHA256): Digest => computeDigest(fn, b);

async function rejectsWith(p: Promise<unknown>, code: Code, pattern?: RegExp): Promise<void> {
  await assert.rejects(p, (e: unknown) => {
    assert.equal(codeOf(e), code, `expected code ${Code[code]}, got ${Code[codeOf(e)]}: ${(e as Error).message}`);
    if (pattern) assert.match((e as Error).message, pattern);
    return true;
  });
}

/**
 * The behaviour every BlobStore (backend or decorator) must have. Each store
 * is also run wrapped in VerifyingBlobStore, which is how the CAS uses it.
 */
export function blobStoreContract(name: string, traits: ContractTraits, make: () => Promise<ContractSubject>): void {
  describe(`BlobStore contract: ${name}`, () => {
    it('stores and returns blobs, whole and by range', async () => {
      const { store } = await make();
      const data = blob('hello, content-addressed world');
      const d = digestOf(data);
      await store.put(d, data);
      assert.deepEqual(await store.get(d), data);
      assert.deepEqual(await readAll(await store.read(d)), data);
      assert.deepEqual(await readAll(await store.read(d, 7)), data.subarray(7));
      assert.deepEqual(await readAll(await store.read(d, 7, 7)), data.subarray(7, 14));
      assert.deepEqual(await readAll(await store.read(d, data.length)), Buffer.alloc(0));
      assert.deepEqual(await readAll(await store.read(d, 3, 1000)), data.subarray(3));
      await store.close?.();
    });

    it('reports missing blobs and not present ones', async () => {
      const { store } = await make();
      const present = blob('present');
      const absent = blob('absent');
      await store.put(digestOf(present), present);
      const missing = await store.findMissing([digestOf(present), digestOf(absent)]);
      assert.deepEqual(
        missing.map((m) => m.hash),
        [digestOf(absent).hash],
      );
      await store.close?.();
    });

    it('keeps digest functions apart', async () => {
      const { store } = await make();
      const data = blob('same bytes, two functions');
      await store.put(digestOf(data, BLAKE3), data);
      assert.equal((await store.findMissing([digestOf(data, SHA256)])).length, 1);
      assert.equal((await store.findMissing([digestOf(data, BLAKE3)])).length, 0);
      await store.close?.();
    });

    it('NOT_FOUND for a missing blob, OUT_OF_RANGE past the end, INVALID_ARGUMENT for negative ranges', async () => {
      const { store } = await make();
      const data = blob('0123456789');
      const d = digestOf(data);
      await rejectsWith(store.get(d), Code.NOT_FOUND, /not found/);
      await rejectsWith(store.read(d), Code.NOT_FOUND);
      await store.put(d, data);
      await rejectsWith(store.read(d, 11), Code.OUT_OF_RANGE, /past the end/);
      await rejectsWith(store.read(d, -1), Code.INVALID_ARGUMENT, /negative/);
      await rejectsWith(store.read(d, 0, -5), Code.INVALID_ARGUMENT, /negative/);
      await store.close?.();
    });

    it('shows nothing of a write until it commits, and nothing after an abort', async () => {
      const { store } = await make();
      const data = blob('streamed in three parts');
      const d = digestOf(data);
      const w = store.beginWrite(d);
      await w.write(data.subarray(0, 5));
      await w.write(data.subarray(5, 10));
      assert.equal(w.written, 10);
      assert.equal((await store.findMissing([d])).length, 1);
      await w.write(data.subarray(10));
      await w.commit();
      assert.deepEqual(await store.get(d), data);

      const other = blob('never finished');
      const od = digestOf(other);
      const w2 = store.beginWrite(od);
      await w2.write(other.subarray(0, 4));
      await w2.abort();
      assert.equal((await store.findMissing([od])).length, 1);
      await store.close?.();
    });

    it('accepts concurrent uploads of the same blob', async () => {
      const { store } = await make();
      const data = Buffer.alloc(300_000, 7);
      const d = digestOf(data);
      await Promise.all(
        Array.from({ length: 8 }, async (_, i) => {
          const w = store.beginWrite(d);
          for (let off = 0; off < data.length; off += 65536) {
            await w.write(data.subarray(off, off + 65536));
            if (i % 2) await new Promise((r) => setImmediate(r));
          }
          await w.commit();
        }),
      );
      assert.deepEqual(await store.get(d), data);
      await store.close?.();
    });

    it('stores the same bytes when its writer lets go of its resources between writes', async () => {
      const { store } = await make();
      const data = Buffer.alloc(200_000);
      for (let i = 0; i < data.length; i++) data[i] = (i * 31) & 0xff;
      const d = digestOf(data);
      const w = store.beginWrite(d);
      for (let off = 0; off < data.length; off += 70_000) {
        await w.write(data.subarray(off, off + 70_000));
        await w.release?.();
        await w.release?.();
      }
      await w.commit();
      assert.deepEqual(await store.get(d), data);

      const other = blob('released, then abandoned');
      const od = digestOf(other);
      const w2 = store.beginWrite(od);
      await w2.write(other.subarray(0, 4));
      await w2.release?.();
      await w2.abort();
      assert.equal((await store.findMissing([od])).length, 1);
      await store.close?.();
    });

    it("does not keep a reference to the caller's buffer", async () => {
      const { store } = await make();
      const data = blob('mutable source buffer');
      const copy = Buffer.from(data);
      const d = digestOf(data);
      await store.put(d, data);
      data.fill(0);
      assert.deepEqual(await store.get(d), copy);
      await store.close?.();
    });

    const limitBytes = traits.limitBytes;
    if (limitBytes !== undefined)
      it('evicts least-recently-used blobs to stay under its limit', async () => {
        const { store } = await make();
        // Eviction waits until a store knows all it holds.
        await whenIndexed(store);
        const size = Math.floor(limitBytes / 4);
        const blobs = Array.from({ length: 6 }, (_, i) => Buffer.alloc(size, i + 1));
        const ds = blobs.map((b) => digestOf(b));
        await store.put(ds[0]!, blobs[0]!);
        await store.put(ds[1]!, blobs[1]!);
        await store.put(ds[2]!, blobs[2]!);
        await store.get(ds[0]!); // 0 is now the most recently used
        await store.put(ds[3]!, blobs[3]!);
        await store.put(ds[4]!, blobs[4]!);
        const missing = new Set((await store.findMissing(ds.slice(0, 5))).map((d) => d.hash));
        assert.ok(missing.has(ds[1]!.hash), 'the least recently used blob is evicted');
        assert.ok(!missing.has(ds[0]!.hash), 'a recently read blob survives');
        assert.ok(!missing.has(ds[4]!.hash), 'the newest blob survives');
        await rejectsWith(store.put(digestOf(Buffer.alloc(limitBytes + 1)), Buffer.alloc(limitBytes + 1)), Code.RESOURCE_EXHAUSTED, /exceeds/);
        await store.close?.();
      });

    if (traits.persistent)
      it('keeps its data across a restart', async () => {
        const subject = await make();
        assert.ok(subject.reopen, 'a persistent store must supply reopen');
        const data = blob('survives restarts');
        const d = digestOf(data);
        await subject.store.put(d, data);
        const unfinished = subject.store.beginWrite(digestOf(blob('half')));
        await unfinished.write(blob('ha'));
        const again = await subject.reopen!();
        assert.deepEqual(await again.get(d), data);
        assert.equal((await again.findMissing([digestOf(blob('half'))])).length, 1);
        await again.close?.();
      });

    describe('wrapped as a CAS (VerifyingBlobStore)', () => {
      it('rejects bytes that do not match the digest, and keeps nothing', async () => {
        const { store } = await make();
        const cas = new VerifyingBlobStore(store);
        const data = blob('the real content');
        const d = digestOf(data);
        await rejectsWith(cas.put(d, blob('the fake content')), Code.INVALID_ARGUMENT, /digest mismatch/);
        await rejectsWith(cas.put(d, blob('short')), Code.INVALID_ARGUMENT, /size mismatch/);
        const w = cas.beginWrite(d);
        await w.write(blob('the real conten'));
        await w.write(blob('X'));
        await rejectsWith(w.commit(), Code.INVALID_ARGUMENT, /digest mismatch/);
        const w2 = cas.beginWrite(d);
        await rejectsWith(w2.write(Buffer.concat([data, blob('!')])), Code.INVALID_ARGUMENT, /more than/);
        assert.equal((await cas.findMissing([d])).length, 1);
        await cas.put(d, data);
        assert.deepEqual(await cas.get(d), data);
        await cas.close?.();
      });

      it('always has the empty blob', async () => {
        const { store } = await make();
        const cas = new VerifyingBlobStore(store);
        for (const fn of [SHA256, BLAKE3]) {
          const e = computeDigest(fn, Buffer.alloc(0));
          assert.deepEqual(await cas.findMissing([e]), []);
          assert.equal((await cas.get(e)).length, 0);
          assert.equal((await readAll(await cas.read(e))).length, 0);
        }
        await cas.close?.();
      });
    });
  });
}
