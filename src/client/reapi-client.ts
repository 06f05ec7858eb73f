import { randomUUID } from 'node:crypto';
import {
  type ChannelCredentials,
  type Client,
  credentials,
  makeGenericClientConstructor,
  Metadata,
  type ServiceDefinition,
} from '@grpc/grpc-js';
import { type Digest, type DigestFunction, fromWire, SHA256, toWire } from '../common/digest.js';
import { ReprError, Code } from '../common/errors.js';
import { decodeReadResponse, encodeWriteRequest } from '../cas/bytestream-codec.js';
import { blobResourceName, type Compressor, uploadResourceName } from '../cas/resource-name.js';
import { ByteStreamService, type QueryWriteStatusResponse, type WriteResponse } from '../proto/google/bytestream/bytestream.js';
import {
  ActionCacheClient,
  type ActionResult,
  CapabilitiesClient,
  ContentAddressableStorageClient,
  type ServerCapabilities,
} from '../proto/build/bazel/remote/execution/v2/remote_execution.js';

/** ByteStream with the hand-written codecs (the server uses the same ones). */
const byteStreamDefinition = {
  read: { ...ByteStreamService.read, responseDeserialize: decodeReadResponse },
  write: { ...ByteStreamService.write, requestSerialize: encodeWriteRequest },
  queryWriteStatus: ByteStreamService.queryWriteStatus,
} as unknown as ServiceDefinition;
const ByteStreamClient = makeGenericClientConstructor(byteStreamDefinition, 'google.bytestream.ByteStream');

export interface ReapiClientOptions {
  /** grpc://host:port (plaintext) or host:port. */
  target: string;
  instanceName?: string;
  digestFunction?: DigestFunction;
  credentials?: ChannelCredentials;
  /** Bytes per WriteRequest. */
  writeChunkBytes?: number;
}

type Callback<T> = (err: Error | null, res?: T) => void;

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
    const address = opts.target.replace(/^grpc:\/\//, '');
    const creds = opts.credentials ?? credentials.createInsecure();
    // Large HTTP/2 windows: with the 64 KiB default, blob downloads stall on WINDOW_UPDATEs.
    const options = { 'grpc.max_receive_message_length': -1, 'grpc.max_send_message_length': -1, 'grpc-node.flow_control_window': 16 * 1024 * 1024 };
    this.instanceName = opts.instanceName ?? '';
    this.fn = opts.digestFunction ?? SHA256;
    this.chunk = opts.writeChunkBytes ?? 1024 * 1024;
    this.cas = new ContentAddressableStorageClient(address, creds, options);
    // Share one channel between the stubs.
    const channelOverride = { channelOverride: this.cas.getChannel() };
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

  async findMissing(digests: readonly Digest[]): Promise<Digest[]> {
    const res = await call<{ missingBlobDigests: { hash: string; sizeBytes: number }[] }>((cb) =>
      this.cas.findMissingBlobs({ instanceName: this.instanceName, blobDigests: digests.map(toWire), digestFunction: this.fn.value }, cb),
    );
    return res.missingBlobDigests.map((d) => fromWire(this.fn, d));
  }

  /** Uploads a blob with ByteStream.Write, in chunks. */
  async write(digest: Digest, data: Buffer, opts: { compressor?: Compressor; uploadId?: string; offset?: number } = {}): Promise<WriteResponse> {
    const name = uploadResourceName(this.instanceName, opts.uploadId ?? randomUUID(), digest, opts.compressor);
    return new Promise<WriteResponse>((resolve, reject) => {
      const stream = (this.byteStream.write as (cb: Callback<WriteResponse>) => NodeJS.WritableStream)((err, res) =>
        err ? reject(err) : resolve(res!),
      );
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
    const stream = (this.byteStream.read as (req: unknown) => NodeJS.ReadableStream)({
      resourceName: blobResourceName(this.instanceName, digest, opts.compressor),
      readOffset: opts.offset ?? 0,
      readLimit: opts.limit ?? 0,
    });
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
        { instanceName: this.instanceName, actionDigest: toWire(action), inlineStdout: false, inlineStderr: false, inlineOutputFiles: [], digestFunction: this.fn.value },
        cb,
      ),
    );
  }

  updateActionResult(action: Digest, result: ActionResult): Promise<ActionResult> {
    return call((cb) =>
      this.ac.updateActionResult({ instanceName: this.instanceName, actionDigest: toWire(action), actionResult: result, resultsCachePolicy: undefined, digestFunction: this.fn.value }, cb),
    );
  }
}

export { Metadata, ReprError, Code };
