import { randomUUID } from 'node:crypto';
import { Readable } from 'node:stream';
import { encodeWriteRequest } from '../reapi/bytestream-codec.js';
import { uploadResourceName } from '../reapi/resource-name.js';
import { type EncodedWriteCall, ReapiClient } from '../reapi/reapi-client.js';
import { type Digest, type DigestFunction, digestKey, digestString, isEmptyDigest } from '../common/digest.js';
import { cancelled, Code, codeOf, internal, invalidArgument, notFound, ReprError } from '../common/errors.js';
import type { WriteResponse } from '../proto/google/bytestream/bytestream.js';
import type { DialOptions } from '../grpc/dial.js';
import { type BlobStore, type BlobWriter, putWithWriter, readAll } from './blob-store.js';

const MiB = 1024 * 1024;

/** Digests per FindMissingBlobs: about 750 kB of request, well within servers' message limits. */
const FIND_MISSING_BATCH = 10_000;
/** Blobs up to this size go through the Batch* calls; larger ones through ByteStream. */
const SMALL_BLOB_BYTES = MiB;
/** Bytes per WriteRequest of a ByteStream upload. */
const WRITE_CHUNK_BYTES = MiB;
/**
 * What one blob adds to a batch besides its bytes (digest, status, framing):
 * without it, a batch of thousands of tiny blobs would pass the byte budget
 * yet exceed the server's message size limit.
 */
const PER_BLOB_OVERHEAD = 128;
/** Calls one findMissing or getMany keeps in flight at once. */
const PARALLEL_CALLS = 8;

export interface RemoteBlobStoreOptions extends DialOptions {
  /** grpc://host:port, grpcs://host:port or host:port. */
  target: string;
  instanceName: string;
}

export interface RemoteBlobStoreTuning {
  /**
   * Budget of one BatchReadBlobs or BatchUpdateBlobs call. It must stay under
   * the server's max_batch_total_size_bytes (4 MiB on a repr server by
   * default); the 3 MiB default leaves room for other servers' framing.
   */
  maxBatchBytes?: number;
}

interface Cancellable {
  cancel(): void;
}

/**
 * The CAS of another REAPI server as a BlobStore, over gRPC. Standalone
 * workers put their local disk cache in front of it with ReadCachingBlobStore.
 * Errors keep the remote status code (NOT_FOUND stays NOT_FOUND) and add the
 * digest and server to the message. The store has no files of its own, so it
 * offers no `localPath`.
 *
 * It either opens its own channel from `{ target, instanceName }` (and closes
 * it on `close`), or uses a ReapiClient the caller owns, with that client's
 * instance name; `close` then only cancels this store's calls.
 */
export class RemoteBlobStore implements BlobStore {
  private readonly client: ReapiClient;
  private readonly ownsClient: boolean;
  private readonly where: string;
  private readonly maxBatchBytes: number;
  private readonly smallBlobBytes: number;
  /** Streaming calls in flight, cancelled by `close` so that they cannot keep the process alive. */
  private readonly calls = new Set<Cancellable>();
  private closed = false;

  constructor(remote: RemoteBlobStoreOptions | ReapiClient, tuning: RemoteBlobStoreTuning = {}) {
    this.ownsClient = !(remote instanceof ReapiClient);
    this.client = remote instanceof ReapiClient ? remote : new ReapiClient(remote);
    const instance = this.client.instanceName ? ` (instance "${this.client.instanceName}")` : '';
    this.where = `remote CAS ${this.client.cas.getChannel().getTarget()}${instance}`;
    this.maxBatchBytes = tuning.maxBatchBytes ?? 3 * MiB;
    if (!(this.maxBatchBytes > PER_BLOB_OVERHEAD)) throw invalidArgument(`maxBatchBytes ${this.maxBatchBytes} is too small`);
    this.smallBlobBytes = Math.min(SMALL_BLOB_BYTES, this.maxBatchBytes - PER_BLOB_OVERHEAD);
  }

  async findMissing(digests: readonly Digest[]): Promise<Digest[]> {
    if (digests.length === 0) return [];
    const requests = [...groupByFunction(digests)].flatMap(([fn, ds]) => chunked(ds, FIND_MISSING_BATCH).map((chunk) => ({ fn, chunk })));
    const missing = new Set<string>();
    await inParallel(requests, PARALLEL_CALLS, async ({ fn, chunk }) => {
      let found: Digest[];
      try {
        found = await this.client.findMissing(chunk, fn);
      } catch (e) {
        throw this.remoteError(e, `FindMissingBlobs on ${this.where}`);
      }
      for (const d of found) missing.add(digestKey(d));
    });
    return digests.filter((d) => missing.has(digestKey(d)));
  }

  async get(digest: Digest): Promise<Buffer> {
    if (isEmptyDigest(digest)) return Buffer.alloc(0);
    if (digest.sizeBytes > this.smallBlobBytes) return this.checkedLength(digest, await readAll(await this.read(digest)));
    const [res] = await this.batchRead([digest]);
    if (!res) throw internal(`BatchReadBlobs on ${this.where} did not answer for blob ${digestString(digest)}`);
    if (res.code !== Code.OK) throw this.blobError(digest, res.code, res.message, 'reading');
    return this.checkedLength(digest, res.data);
  }

  /**
   * Streams a range with ByteStream.Read. Resolves once the server has sent
   * its first chunk or ended the call, so that NOT_FOUND and OUT_OF_RANGE
   * reject here rather than in the middle of the stream.
   */
  async read(digest: Digest, offset = 0, limit = 0): Promise<Readable> {
    if (offset < 0) throw invalidArgument(`read offset ${offset} is negative`);
    if (limit < 0) throw invalidArgument(`read limit ${limit} is negative`);
    const call = this.client.readStream(digest, { offset, limit });
    this.calls.add(call);
    return new Promise<Readable>((resolve, reject) => {
      let started = false;
      let finished = false;
      const out = new Readable({
        // Byte mode with room for one server chunk: the call is paused as soon as the reader lags.
        highWaterMark: MiB,
        read: () => void call.resume(),
        destroy: (err, cb) => {
          if (!finished) call.cancel();
          this.calls.delete(call);
          cb(err);
        },
      });
      const start = () => {
        if (started) return;
        started = true;
        resolve(out);
      };
      call.on('data', (chunk: Buffer) => {
        if (!out.push(chunk)) call.pause();
        start();
      });
      call.on('end', () => {
        finished = true;
        this.calls.delete(call);
        out.push(null);
        start();
      });
      call.on('error', (e: unknown) => {
        // A CANCELLED that follows our own destroy is the call ending, not news.
        if (out.destroyed) return;
        finished = true;
        const err = this.blobError(digest, codeOf(e), detailsOf(e), 'reading');
        if (started) out.destroy(err);
        else {
          started = true;
          out.destroy();
          reject(err);
        }
      });
    });
  }

  async put(digest: Digest, data: Buffer): Promise<void> {
    if (data.length > this.smallBlobBytes) return putWithWriter(this, digest, data);
    let results: Awaited<ReturnType<ReapiClient['batchUpdate']>>;
    try {
      results = await this.client.batchUpdate([{ digest, data }]);
    } catch (e) {
      throw this.remoteError(e, `storing blob ${digestString(digest)} in ${this.where}`);
    }
    const res = results[0];
    if (!res) throw internal(`BatchUpdateBlobs on ${this.where} did not answer for blob ${digestString(digest)}`);
    if (res.code !== Code.OK) throw this.blobError(digest, res.code, res.message, 'storing');
  }

  beginWrite(digest: Digest): BlobWriter {
    return new RemoteBlobWriter(
      digest,
      uploadResourceName(this.client.instanceName, randomUUID(), digest),
      () => {
        const call = this.client.openEncodedWrite();
        this.calls.add(call.stream);
        const forget = () => void this.calls.delete(call.stream);
        call.response.then(forget, forget);
        return call;
      },
      (e) => this.blobError(digest, codeOf(e), detailsOf(e), 'storing'),
    );
  }

  /**
   * Fetches many blobs with few round trips: small ones packed into
   * BatchReadBlobs calls, large ones streamed, several calls at once. Keyed by
   * hash. Blobs the server does not have are left out of the map rather than
   * failing the rest, as in BatchReadBlobs itself: a caller that prefetches
   * (a worker staging inputs) then lets `get` report them, and one that
   * needs them all compares the keys. Any other failure rejects.
   */
  async getMany(digests: readonly Digest[]): Promise<Map<string, Buffer>> {
    const out = new Map<string, Buffer>();
    const seen = new Set<string>();
    const small: Digest[] = [];
    const large: Digest[] = [];
    for (const d of digests) {
      if (seen.has(d.hash)) continue;
      seen.add(d.hash);
      if (isEmptyDigest(d)) out.set(d.hash, Buffer.alloc(0));
      else (d.sizeBytes <= this.smallBlobBytes ? small : large).push(d);
    }

    const jobs: (() => Promise<void>)[] = [
      // Large blobs first: they take longest, and the batches fill the gaps.
      ...large.map((d) => async () => {
        try {
          out.set(d.hash, await this.get(d));
        } catch (e) {
          if (codeOf(e) !== Code.NOT_FOUND) throw e;
        }
      }),
      ...[...groupByFunction(small).values()]
        .flatMap((ds) => this.packBatches(ds))
        .map((batch) => async () => {
          const answered = new Set<string>();
          for (const r of await this.batchRead(batch)) {
            answered.add(r.digest.hash);
            if (r.code === Code.NOT_FOUND) continue;
            if (r.code !== Code.OK) throw this.blobError(r.digest, r.code, r.message, 'reading');
            else out.set(r.digest.hash, this.checkedLength(r.digest, r.data));
          }
          const unanswered = batch.find((d) => !answered.has(d.hash));
          if (unanswered) throw internal(`BatchReadBlobs on ${this.where} did not answer for blob ${digestString(unanswered)}`);
        }),
    ];
    await inParallel(jobs, PARALLEL_CALLS, (job) => job());
    return out;
  }

  /** Cancels calls still in flight, and closes the channel if this store opened it. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const c of this.calls) c.cancel();
    this.calls.clear();
    if (this.ownsClient) this.client.close();
  }

  /** Splits blobs of one digest function into batches within the byte budget. */
  private packBatches(digests: readonly Digest[]): Digest[][] {
    const batches: Digest[][] = [];
    let batch: Digest[] = [];
    let bytes = 0;
    for (const d of digests) {
      const cost = d.sizeBytes + PER_BLOB_OVERHEAD;
      if (batch.length > 0 && bytes + cost > this.maxBatchBytes) {
        batches.push(batch);
        batch = [];
        bytes = 0;
      }
      batch.push(d);
      bytes += cost;
    }
    if (batch.length > 0) batches.push(batch);
    return batches;
  }

  private async batchRead(digests: readonly Digest[]) {
    try {
      return await this.client.batchRead(digests);
    } catch (e) {
      const what = digests.length === 1 ? `blob ${digestString(digests[0]!)}` : `${digests.length} blobs`;
      throw this.remoteError(e, `reading ${what} from ${this.where}`);
    }
  }

  /** A short or long blob would otherwise be handed on as if it were the real one. */
  private checkedLength(digest: Digest, data: Buffer): Buffer {
    if (data.length !== digest.sizeBytes) {
      throw new ReprError(Code.DATA_LOSS, `${this.where} returned ${data.length} bytes for blob ${digestString(digest)}`);
    }
    return data;
  }

  /** A per-blob failure, with the message the contract expects for NOT_FOUND. */
  private blobError(digest: Digest, code: Code, message: string, doing: 'reading' | 'storing'): ReprError {
    if (code === Code.NOT_FOUND) return notFound(`blob ${digestString(digest)} not found in ${this.where}`);
    return new ReprError(code, `${doing} blob ${digestString(digest)} ${doing === 'reading' ? 'from' : 'in'} ${this.where}: ${message}`);
  }

  /** A failed call: same code, the server's own words, and what we were doing. */
  private remoteError(e: unknown, context: string): ReprError {
    return new ReprError(codeOf(e), `${context}: ${detailsOf(e)}`, { cause: e });
  }
}

/**
 * A ByteStream upload. The call starts with the first byte (or at commit, for
 * an empty blob) and the server keeps what it receives under a fresh upload
 * id; the blob appears only when the finishing request is accepted.
 */
class RemoteBlobWriter implements BlobWriter {
  private call: EncodedWriteCall | undefined;
  /** The server's answer once the call has ended, early or not. */
  private outcome: { res: WriteResponse } | { err: unknown } | undefined;
  private bytes = 0;
  private sentName = false;
  private done = false;
  private aborted = false;
  /** Writes are serialized so that a caller firing several never interleaves them. */
  private tail: Promise<void> = Promise.resolve();

  constructor(
    private readonly digest: Digest,
    private readonly resourceName: string,
    private readonly open: () => EncodedWriteCall,
    private readonly mapError: (e: unknown) => ReprError,
  ) {}

  get written(): number {
    return this.bytes;
  }

  private start(): EncodedWriteCall {
    if (this.call) return this.call;
    const call = this.open();
    this.call = call;
    call.response.then(
      (res) => void (this.outcome = { res }),
      (err: unknown) => void (this.outcome = { err }),
    );
    // Write failures also end the call, and reach us through `response`.
    call.stream.on('error', () => undefined);
    return call;
  }

  private send(call: EncodedWriteCall, data: Buffer, finishWrite: boolean): boolean {
    const resourceName = this.sentName ? '' : this.resourceName;
    this.sentName = true;
    // Encoding copies `data` into the frame now, so the caller may reuse its buffer.
    return call.stream.write(encodeWriteRequest({ resourceName, writeOffset: this.bytes, finishWrite, data }));
  }

  write(chunk: Buffer): Promise<void> {
    if (this.done) return Promise.reject(internal(`write to a finished upload of blob ${digestString(this.digest)}`));
    const p = this.tail.then(async () => {
      if (this.aborted) throw cancelled(`upload of blob ${digestString(this.digest)} was aborted`);
      const call = this.start();
      for (let off = 0; off < chunk.length; off += WRITE_CHUNK_BYTES) {
        this.throwIfFailed();
        // The server ends the call early when it already has the blob; the rest is not needed.
        if (this.outcome) {
          this.bytes += chunk.length - off;
          return;
        }
        const piece = chunk.subarray(off, off + WRITE_CHUNK_BYTES);
        const ok = this.send(call, piece, false);
        this.bytes += piece.length;
        if (!ok) await this.drained(call);
      }
      this.throwIfFailed();
    });
    this.tail = p.catch(() => undefined);
    return p;
  }

  private throwIfFailed(): void {
    if (this.outcome && 'err' in this.outcome) throw this.mapError(this.outcome.err);
  }

  /** Waits for grpc-js to take more, or for the call to end (a 'drain' would then never come). */
  private drained(call: EncodedWriteCall): Promise<void> {
    return new Promise((resolve) => {
      const done = () => {
        call.stream.off('drain', done);
        resolve();
      };
      call.stream.once('drain', done);
      call.response.then(done, done);
    });
  }

  async commit(): Promise<void> {
    if (this.done) return;
    await this.tail;
    this.done = true;
    const call = this.start();
    if (!this.outcome) {
      this.send(call, Buffer.alloc(0), true);
      call.stream.end();
    }
    let res: WriteResponse;
    try {
      res = await call.response;
    } catch (e) {
      throw this.mapError(e);
    }
    if (res.committedSize !== this.digest.sizeBytes) {
      throw internal(`upload of blob ${digestString(this.digest)} ended with ${res.committedSize} bytes committed, not ${this.digest.sizeBytes}`);
    }
  }

  async abort(): Promise<void> {
    if (this.done) return;
    this.done = true;
    this.aborted = true;
    // Cancel before waiting: a write stuck on backpressure ends only when the call does.
    if (this.call && !this.outcome) this.call.stream.cancel();
    await this.tail;
  }
}

function groupByFunction(digests: readonly Digest[]): Map<DigestFunction, Digest[]> {
  const groups = new Map<DigestFunction, Digest[]>();
  for (const d of digests) {
    const g = groups.get(d.fn);
    if (g) g.push(d);
    else groups.set(d.fn, [d]);
  }
  return groups;
}

function chunked<T>(items: readonly T[], size: number): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < items.length; i += size) out.push(items.slice(i, i + size));
  return out;
}

/** Runs `fn` over `items` with at most `limit` at once; after a failure no new item starts, and the first failure rejects. */
async function inParallel<T>(items: readonly T[], limit: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  let failed = false;
  const worker = async () => {
    while (!failed && next < items.length) {
      try {
        await fn(items[next++]!);
      } catch (e) {
        failed = true;
        throw e;
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
}

/** The status message of a gRPC ServiceError (its `message` also carries the code). */
function detailsOf(e: unknown): string {
  const details = (e as { details?: unknown } | undefined)?.details;
  if (typeof details === 'string' && details) return details;
  return e instanceof Error ? e.message : String(e);
}
