import { randomBytes } from 'node:crypto';
import { mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { computeDigest, type Digest, digestFunctionFromName, makeDigest, SHA256 } from '../src/common/digest.js';
import { DiskBlobStore } from '../src/storage/disk-store.js';

/**
 * Writes `count` random 32-byte blobs straight into a disk store's
 * directory, in the store's layout. Uploading a million blobs through the
 * API is bound by the file system (tmp write + rename, ~4,000/s here), and a
 * store opened on the directory afterwards indexes them at start, which is
 * what a restart of a full server does.
 */
export function seedDiskStore(casDir: string, count: number, log: (msg: string) => void): void {
  const t = performance.now();
  for (let i = 0; i < count; i++) {
    const data = randomBytes(32);
    const file = DiskBlobStore.blobFile(casDir, computeDigest(SHA256, data));
    try {
      writeFileSync(file, data);
    } catch {
      // The first blob of each fan-out directory creates it.
      mkdirSync(path.dirname(file), { recursive: true });
      writeFileSync(file, data);
    }
    if (i % 200_000 === 0 && i > 0) log(`${i} blobs written`);
  }
  log(`seeded ${count} blobs in ${((performance.now() - t) / 1000).toFixed(1)} s`);
}

/** Digests of up to `n` blobs in fan-out directory `sub` (two hex digits) of a disk store's directory. */
export function storedDigests(casDir: string, sub: string, n: number): Digest[] {
  return readdirSync(path.join(casDir, 'blobs', sub))
    .slice(0, n)
    .map((name) => {
      const [fn, hash, size] = name.split('-');
      return makeDigest(digestFunctionFromName(fn!)!, hash!, size!);
    });
}
