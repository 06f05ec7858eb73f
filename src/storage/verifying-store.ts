import { Readable } from 'node:stream';
import { type Digest, digestString, isEmptyDigest } from '../common/digest.js';
import { invalidArgument } from '../common/errors.js';
import { ForwardingBlobStore, type BlobWriter } from './blob-store.js';
import { resolveRange } from './range.js';

/**
 * The content-addressed face of a store: every write is hashed as it streams
 * and refused unless the bytes match the digest, and the empty blob always
 * exists without being stored. Any backend becomes a CAS by wrapping it here.
 */
export class VerifyingBlobStore extends ForwardingBlobStore {
  override async findMissing(digests: readonly Digest[]): Promise<Digest[]> {
    const nonEmpty = digests.filter((d) => !isEmptyDigest(d));
    return nonEmpty.length === 0 ? [] : this.inner.findMissing(nonEmpty);
  }

  override get(digest: Digest): Promise<Buffer> {
    return isEmptyDigest(digest) ? Promise.resolve(Buffer.alloc(0)) : this.inner.get(digest);
  }

  override read(digest: Digest, offset?: number, limit?: number): Promise<Readable> {
    if (isEmptyDigest(digest)) {
      resolveRange(0, offset, limit);
      return Promise.resolve(Readable.from([]));
    }
    return this.inner.read(digest, offset, limit);
  }

  override async put(digest: Digest, data: Buffer): Promise<void> {
    checkContent(digest, data.length, () => {
      const h = digest.fn.newHasher();
      h.update(data);
      return h.digestHex();
    });
    if (!isEmptyDigest(digest)) await this.inner.put(digest, data);
  }

  override beginWrite(digest: Digest): BlobWriter {
    return new VerifyingWriter(digest, isEmptyDigest(digest) ? undefined : this.inner.beginWrite(digest));
  }
}

function checkContent(digest: Digest, size: number, hash: () => string): void {
  if (size !== digest.sizeBytes) {
    throw invalidArgument(`size mismatch for blob ${digestString(digest)}: received ${size} bytes, digest says ${digest.sizeBytes}`);
  }
  const actual = hash();
  if (actual !== digest.hash) {
    throw invalidArgument(`digest mismatch: data has ${digest.fn.name} ${actual}, expected ${digest.hash}`);
  }
}

class VerifyingWriter implements BlobWriter {
  private readonly hasher;
  private bytes = 0;

  constructor(
    private readonly digest: Digest,
    private readonly inner: BlobWriter | undefined,
  ) {
    this.hasher = digest.fn.newHasher();
  }

  get written(): number {
    return this.bytes;
  }

  async write(chunk: Buffer): Promise<void> {
    if (this.bytes + chunk.length > this.digest.sizeBytes) {
      // Refuse as soon as it overflows instead of storing up to the end.
      await this.abort();
      throw invalidArgument(`size mismatch for blob ${digestString(this.digest)}: received more than the ${this.digest.sizeBytes} bytes the digest says`);
    }
    this.hasher.update(chunk);
    this.bytes += chunk.length;
    await this.inner?.write(chunk);
  }

  async commit(): Promise<void> {
    try {
      checkContent(this.digest, this.bytes, () => this.hasher.digestHex());
    } catch (e) {
      await this.abort();
      throw e;
    }
    await this.inner?.commit();
  }

  async abort(): Promise<void> {
    await this.inner?.abort();
  }

  async release(): Promise<void> {
    await this.inner?.release?.();
  }
}
