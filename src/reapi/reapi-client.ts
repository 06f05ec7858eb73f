import { randomUUID } from 'node:crypto';
import {
  type Client,
  type ClientReadableStream,
  type ClientWritableStream,
  makeGenericClientConstructor,
  Metadata,
  type ServiceDefinition,
} from '@grpc/grpc-js';
import { dial, type DialOptions } from '../grpc/dial.js';
import { type Digest, type DigestFunction, fromWire, SHA256, toWire } from '../common/digest.js';
import { ReprError, Code, invalidArgument } from '../common/errors.js';
import { decodeReadResponse, encodeWriteRequest } from './bytestream-codec.js';
import { decodeFindMissingResponse, encodeFindMissingRequest } from './find-missing-codec.js';
import { blobResourceName, type Compressor, uploadResourceName } from './resource-name.js';
import { ByteStreamService, type QueryWriteStatusResponse, type WriteResponse } from '../proto/google/bytestream/bytestream.js';
import {
  ActionCacheClient,
  type ActionResult,
  CapabilitiesClient,
  Compressor_Value,
  type ContentAddressableStorageClient,
  ContentAddressableStorageService,
  type BatchReadBlobsResponse,
  type BatchUpdateBlobsResponse,
  type ServerCapabilities,
} from '../proto/build/bazel/remote/execution/v2/remote_execution.js';

/**
 * ByteStream with the hand-written codecs (the server uses the same ones).
 * `writeEncoded` is Write again, for callers that encode each WriteRequest
 * themselves when they send it: grpc-js may hold a queued message for a while
 * before serializing it, and the caller's buffer must be free to reuse at once.
 */
const byteStreamDefinition = {
  read: { ...ByteStreamService.read, responseDeserialize: decodeReadResponse },
  write: { ...ByteStreamService.write, requestSerialize: encodeWriteRequest },
  writeEncoded: { ...ByteStreamService.write, requestSerialize: (b: Buffer) => b },
  queryWriteStatus: ByteStreamService.queryWriteStatus,
} as unknown as ServiceDefinition;
const ByteStreamClient = makeGenericClientConstructor(byteStreamDefinition, 'google.bytestream.ByteStream');

/** CAS with the hand-written FindMissingBlobs codecs (the server uses the same ones). */
const CasClient = makeGenericClientConstructor(
  {
    ...ContentAddressableStorageService,
    findMissingBlobs: {
      ...ContentAddressableStorageService.findMissingBlobs,
      requestSerialize: encodeFindMissingRequest,
      responseDeserialize: decodeFindMissingResponse,
    },
  } as unknown as ServiceDefinition,
  'build.bazel.remote.execution.v2.ContentAddressableStorage',
) as unknown as typeof ContentAddressableStorageClient;

export interface ReapiClientOptions extends DialOptions {
  /** grpc://host:port or host:port. */
  target: string;
  instanceName?: string;
  digestFunction?: DigestFunction;
  /** Bytes per WriteRequest. */
  writeChunkBytes?: number;
}

type Callback<T> = (err: Error | null, res?: T) => void;

/** The outcome for one blob of a Batch* call, as the server reported it. */
export interface BatchBlobStatus {
  digest: Digest;
  /** A gRPC status code; Code.OK on success. */
  code: Code;
  message: string;
}

/** An open ByteStream.Write whose requests the caller encodes (see `encodeWriteRequest`). */
export interface EncodedWriteCall {
  readonly stream: ClientWritableStream<Buffer>;
  /** Settles when the server ends the call; rejects with its ServiceError. */
  readonly response: Promise<WriteResponse>;
}

/** The digest function shared by `digests`; Batch* and FindMissing requests carry only one. */
function sharedFunction(digests: readonly Digest[], fallback: DigestFunction): DigestFunction {
  const fn = digests[0]?.fn ?? fallback;
  if (digests.some((d) => d.fn !== fn)) throw invalidArgument('digests of one request must share a digest function');
  return fn;
}

const wireKey = (d: { hash: string; sizeBytes: number }) => `${d.hash}/${d.sizeBytes}`;

/**
 * Pairs a Batch* call's per-blob responses with the digests asked for (by
 * hash and size: the wire has no digest function), dropping answers for
 * blobs that were not asked for.
 */
function matchResponses<R extends { digest?: { hash: string; sizeBytes: number } | undefined; status?: { code: number; message: string } | undefined }>(
  asked: readonly Digest[],
  responses: readonly R[],
): (BatchBlobStatus & { response: R })[] {
  const byKey = new Map(asked.map((d) => [wireKey(d), d]));
  return responses.flatMap((response) => {
    const digest = response.digest && byKey.get(wireKey(response.digest));
    return digest ? [{ digest, code: response.status?.code ?? Code.OK, message: response.status?.message ?? '', response }] : [];
  });
}

function call<T>(fn: (cb: Callback<T>) => void): Promise<T> {
  return new Promise((resolve, reject) => fn((err, res) => (err ? reject(err) : resolve(res as T))));
}

/**
 * A REAPI client for repr's own tools and tests: CAS, ByteStream, action
 * cache and capabilities on one channel. Errors are grpc-js ServiceErrors
 * (they carry `code`, like ReprError).
 */
export class ReapiClient {
  readonly instanceName: string;
  readonly fn: DigestFunction;
  readonly cas: InstanceType<typeof ContentAddressableStorageClient>;
  readonly ac: InstanceType<typeof ActionCacheClient>;
  readonly capabilities: InstanceType<typeof CapabilitiesClient>;
  readonly byteStream: Client & Record<string, (...args: unknown[]) => unknown>;
  private readonly chunk: number;

  constructor(opts: ReapiClientOptions) {
    const { address, credentials: creds, options, interceptors } = dial(opts.target, opts);
    this.instanceName = opts.instanceName ?? '';
    this.fn = opts.digestFunction ?? SHA256;
    this.chunk = opts.writeChunkBytes ?? 1024 * 1024;
    this.cas = new CasClient(address, creds, options);
    // Share one channel between the stubs.
    const channelOverride = { channelOverride: this.cas.getChannel(), interceptors };
    this.ac = new ActionCacheClient(address, creds, channelOverride);
    this.capabilities = new CapabilitiesClient(address, creds, channelOverride);
    this.byteStream = new ByteStreamClient(address, creds, channelOverride) as unknown as ReapiClient['byteStream'];
  }

  close(): void {
    this.cas.close();
  }

  getCapabilities(): Promise<ServerCapabilities> {
    return call((cb) => this.capabilities.getCapabilities({ instanceName: this.instanceName }, cb));
  }

  /** @param fn the request's digest function; the client's own by default. */
  async findMissing(digests: readonly Digest[], fn: DigestFunction = this.fn): Promise<Digest[]> {
    const res = await call<{ missingBlobDigests: { hash: string; sizeBytes: number }[] }>((cb) =>
      this.cas.findMissingBlobs({ instanceName: this.instanceName, blobDigests: digests.map(toWire), digestFunction: fn.value }, cb),
    );
    return res.missingBlobDigests.map((d) => fromWire(fn, d));
  }

  /**
   * BatchReadBlobs, uncompressed. The digests must share a digest function,
   * which the request carries. Results come in the server's order, one per
   * blob it answered for; `data` is empty unless `code` is OK.
   */
  async batchRead(digests: readonly Digest[]): Promise<(BatchBlobStatus & { data: Buffer })[]> {
    const fn = sharedFunction(digests, this.fn);
    const res = await call<BatchReadBlobsResponse>((cb) =>
      this.cas.batchReadBlobs({ instanceName: this.instanceName, digests: digests.map(toWire), acceptableCompressors: [], digestFunction: fn.value }, cb),
    );
    return matchResponses(digests, res.responses).map(({ digest, code, message, response }) => ({ digest, code, message, data: response.data }));
  }

  /** BatchUpdateBlobs, uncompressed; the blobs must share a digest function. */
  async batchUpdate(blobs: readonly { digest: Digest; data: Buffer }[]): Promise<BatchBlobStatus[]> {
    const fn = sharedFunction(
      blobs.map((b) => b.digest),
      this.fn,
    );
    const res = await call<BatchUpdateBlobsResponse>((cb) =>
      this.cas.batchUpdateBlobs(
        {
          instanceName: this.instanceName,
          requests: blobs.map((b) => ({ digest: toWire(b.digest), data: b.data, compressor: Compressor_Value.IDENTITY })),
          digestFunction: fn.value,
        },
        cb,
      ),
    );
    return matchResponses(
      blobs.map((b) => b.digest),
      res.responses,
    ).map(({ digest, code, message }) => ({ digest, code, message }));
  }

  /**
   * Starts a ByteStream.Write whose messages are WriteRequests the caller has
   * already encoded, so that it controls chunking, backpressure and when the
   * upload finishes.
   */
  openEncodedWrite(): EncodedWriteCall {
    let stream!: ClientWritableStream<Buffer>;
    const response = new Promise<WriteResponse>((resolve, reject) => {
      stream = (this.byteStream.writeEncoded as (cb: Callback<WriteResponse>) => ClientWritableStream<Buffer>)((err, res) =>
        err ? reject(err) : resolve(res!),
      );
    });
    return { stream, response };
  }

  /** ByteStream.Read as a stream of chunks, for callers that must not buffer the blob. */
  readStream(digest: Digest, opts: { offset?: number; limit?: number; compressor?: Compressor } = {}): ClientReadableStream<Buffer> {
    return (this.byteStream.read as (req: unknown) => ClientReadableStream<Buffer>)({
      resourceName: blobResourceName(this.instanceName, digest, opts.compressor),
      readOffset: opts.offset ?? 0,
      readLimit: opts.limit ?? 0,
    });
  }

  /** Uploads a blob with ByteStream.Write, in chunks. */
  async write(digest: Digest, data: Buffer, opts: { compressor?: Compressor; uploadId?: string; offset?: number } = {}): Promise<WriteResponse> {
    const name = uploadResourceName(this.instanceName, opts.uploadId ?? randomUUID(), digest, opts.compressor);
    return new Promise<WriteResponse>((resolve, reject) => {
      const stream = (this.byteStream.write as (cb: Callback<WriteResponse>) => NodeJS.WritableStream)((err, res) => (err ? reject(err) : resolve(res!)));
      // For compressed uploads REAPI counts offsets as the first offset plus
      // compressed bytes sent, which this formula gives for both kinds.
      const start = opts.offset ?? 0;
      let off = start;
      let first = true;
      const sink = stream as unknown as { write(m: unknown): boolean; end(): void; once(e: string, f: () => void): void };
      const pump = () => {
        for (;;) {
          const end = Math.min(data.length, off + this.chunk);
          const ok = sink.write({ resourceName: first ? name : '', writeOffset: off, finishWrite: end === data.length, data: data.subarray(off, end) });
          first = false;
          off = end;
          if (end === data.length) return sink.end();
          if (!ok) return sink.once('drain', pump);
        }
      };
      pump();
    });
  }

  /** Reads a blob (or a range of it) with ByteStream.Read. */
  async read(digest: Digest, opts: { offset?: number; limit?: number; compressor?: Compressor } = {}): Promise<Buffer> {
    const stream = this.readStream(digest, opts);
    const chunks: Buffer[] = [];
    for await (const c of stream) chunks.push(c as Buffer);
    return Buffer.concat(chunks);
  }

  queryWriteStatus(resourceName: string): Promise<QueryWriteStatusResponse> {
    return call((cb) => (this.byteStream.queryWriteStatus as (r: unknown, cb: Callback<QueryWriteStatusResponse>) => void)({ resourceName }, cb));
  }

  getActionResult(action: Digest): Promise<ActionResult> {
    return call((cb) =>
      this.ac.getActionResult(
        {
          instanceName: this.instanceName,
          actionDigest: toWire(action),
          inlineStdout: false,
          inlineStderr: false,
          inlineOutputFiles: [],
          digestFunction: this.fn.value,
        },
        cb,
      ),
    );
  }

  updateActionResult(action: Digest, result: ActionResult): Promise<ActionResult> {
    return call((cb) =>
      this.ac.updateActionResult(
        { instanceName: this.instanceName, actionDigest: toWire(action), actionResult: result, resultsCachePolicy: undefined, digestFunction: this.fn.value },
        cb,
      ),
    );
  }
}

export { Metadata, ReprError, Code };
