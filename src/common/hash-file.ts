import { createReadStream } from 'node:fs';
import type { Digest, DigestFunction } from './digest.js';

/** Reads of 1 MiB: the default 64 KiB halves hashing throughput (see FINDINGS.md). */
export const HASH_CHUNK = 1024 * 1024;

/** Hashes a file in 1 MiB reads. */
export async function hashFile(fn: DigestFunction, file: string): Promise<Digest> {
  const h = fn.newHasher();
  let size = 0;
  for await (const c of createReadStream(file, { highWaterMark: HASH_CHUNK })) {
    h.update(c as Buffer);
    size += (c as Buffer).length;
  }
  return { fn, hash: h.digestHex(), sizeBytes: size };
}
