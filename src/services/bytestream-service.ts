import type { handleClientStreamingCall, ServerReadableStream, ServerWritableStream, ServiceDefinition } from '@grpc/grpc-js';
import { checkBlobSize, digestString, int64Text } from '../common/digest.js';
import { Code, invalidArgument, outOfRange, ReprError } from '../common/errors.js';
import type { Logger } from '../common/logger.js';
import type { BlobStore } from '../storage/blob-store.js';
import { ByteStreamService, type QueryWriteStatusRequest, type QueryWriteStatusResponse, type WriteResponse } from '../proto/google/bytestream/bytestream.js';
import { drained, serverStreaming, toServiceError, unary } from '../grpc/handlers.js';
import { decodeReadRequest, decodeWriteRequest, encodeReadResponse, type ReadRequestMsg, type WriteRequestMsg } from '../reapi/bytestream-codec.js';
import type { InstanceNames } from './instances.js';
import { parseReadResource, parseWriteResource, type UploadResource } from '../reapi/resource-name.js';
import { type Upload, type UploadLimits, UploadTable } from './upload-table.js';
import { ZstdDecoder, ZstdEncoder } from '../reapi/zstd.js';

export interface ByteStreamServiceOptions {
  cas: BlobStore;
  instances: InstanceNames;
  log: Logger;
  /** Largest blob accepted (REAPI's max_cas_blob_size_bytes). */
  maxBlobSizeBytes: number;
  /** Bounds on uploads in progress, interrupted ones among them. */
  uploads: UploadLimits;
  /** Largest `data` sent in one ReadResponse. */
  readChunkBytes?: number;
}

/**
 * google.bytestream.ByteStream over the CAS: Read with offset/limit, resumable
 * Write, QueryWriteStatus, and REAPI's compressed-blobs/zstd resource names.
 * Every byte written is verified against the digest before the blob exists.
 */
export class ByteStreamServiceImpl {
  private readonly uploads: UploadTable;
  private readonly readChunk: number;

  constructor(private readonly o: ByteStreamServiceOptions) {
    this.readChunk = o.readChunkBytes ?? 1024 * 1024;
    this.uploads = new UploadTable(o.uploads);
  }

  close(): void {
    this.uploads.close();
  }

  async read(req: ReadRequestMsg, call: ServerWritableStream<ReadRequestMsg, Buffer>): Promise<void> {
    const res = parseReadResource(req.resourceName);
    this.o.instances.check(res.instanceName);
    const size = res.digest.sizeBytes;
    if (req.readOffset < 0) throw outOfRange(`read_offset ${int64Text(req.readOffset)} is negative`);
    if (req.readLimit < 0) throw invalidArgument(`read_limit ${int64Text(req.readLimit)} is negative`);
    if (req.readOffset > size) throw outOfRange(`read_offset ${int64Text(req.readOffset)} is past the end of the ${size}-byte blob`);
    // A limit reaching past the end changes nothing; dropping it keeps values
    // beyond 2^53 out of the stores' arithmetic.
    const limit = req.readLimit >= size - req.readOffset ? 0 : req.readLimit;
    const stream = await this.o.cas.read(res.digest, req.readOffset, limit);
    const encoder = res.compressor === 'zstd' ? new ZstdEncoder() : undefined;
    const send = async (data: Buffer) => {
      for (let off = 0; off < data.length; off += this.readChunk) {
        if (!call.write(data.subarray(off, off + this.readChunk))) await drained(call);
      }
    };
    try {
      for await (const chunk of stream) {
        if (call.cancelled) return;
        const c = chunk as Buffer;
        if (encoder) for (const part of encoder.push(c)) await send(part);
        else await send(c);
      }
      if (encoder) for (const part of encoder.end()) await send(part);
    } finally {
      stream.destroy();
    }
  }

  /** Client-streaming Write; a resumed upload continues where the last one stopped. */
  private write: handleClientStreamingCall<WriteRequestMsg, WriteResponse> = (call, callback) => {
    let finished = false;
    const finish = (err: unknown, res?: WriteResponse) => {
      if (finished) return;
      finished = true;
      if (err) callback(toServiceError(err, this.o.log, 'Write'));
      else callback(null, res);
    };
    this.runWrite(call).then(
      (res) => finish(null, res),
      (err) => finish(err),
    );
  };

  private async runWrite(call: ServerReadableStream<WriteRequestMsg, WriteResponse>): Promise<WriteResponse> {
    let upload: Upload | undefined;
    let name = '';
    let dataFailed = false;
    // The upload table ends this call through `stall` when it stays silent past the idle expiry.
    let stall!: (err: ReprError) => void;
    const stalled = new Promise<never>((_, reject) => (stall = reject));
    stalled.catch(() => undefined);
    const messages = (call as AsyncIterable<WriteRequestMsg>)[Symbol.asyncIterator]();
    try {
      for (;;) {
        const next = await Promise.race([messages.next(), stalled]);
        if (next.done) break;
        const m = next.value;
        if (!upload) {
          name = m.resourceName;
          if (!name) throw invalidArgument('the first WriteRequest must name the resource');
          const resource = parseWriteResource(name);
          this.o.instances.check(resource.instanceName);
          checkBlobSize(resource.digest, this.o.maxBlobSizeBytes);
          checkFirstOffset(m.writeOffset, resource, false);
          if ((await this.o.cas.findMissing([resource.digest])).length === 0) {
            // REAPI: a blob that already exists ends the upload at once, successfully.
            const parked = this.uploads.get(name);
            if (parked && !parked.call) this.uploads.drop(parked);
            return { committedSize: resource.compressor === 'identity' ? resource.digest.sizeBytes : -1 };
          }
          upload = this.startOrResume(name, resource, m.writeOffset);
          upload.call = stall;
        } else if (m.resourceName && m.resourceName !== name) {
          throw invalidArgument(`resource_name changed mid-stream from "${name}" to "${m.resourceName}"`);
        }
        this.uploads.touch(upload);
        const expected = upload.committed + (upload.decoder ? upload.firstOffset : 0);
        if (m.writeOffset !== expected) {
          throw invalidArgument(`write_offset ${int64Text(m.writeOffset)} does not continue the upload: expected ${expected}`);
        }
        if (m.data.length > 0) {
          dataFailed = true; // until the bytes are safely written
          await this.store(upload, m.data);
          dataFailed = false;
          upload.committed += m.data.length;
        }
        if (m.finishWrite) {
          // Whatever happens now, this upload is over: committed or refused.
          this.uploads.remove(upload);
          dataFailed = true;
          upload.decoder?.finish();
          await upload.writer.commit();
          return { committedSize: upload.committed };
        }
      }
    } catch (e) {
      // Bytes that failed verification or storage poison the upload; a bad
      // offset or a broken connection leaves it intact for resumption.
      if (upload && dataFailed) this.forget(upload);
      throw e;
    } finally {
      if (upload) await this.uploads.detach(upload, stall);
    }
    if (!upload) throw invalidArgument('Write stream carried no WriteRequest');
    if (call.cancelled) throw new ReprError(Code.CANCELLED, 'client cancelled the upload');
    throw invalidArgument(`upload of ${digestString(upload.resource.digest)} ended at ${upload.committed} bytes without finish_write; resume it from there`);
  }

  private async store(u: Upload, data: Buffer): Promise<void> {
    u.storing = true;
    u.released = false;
    try {
      if (u.decoder) {
        for (const part of u.decoder.push(data)) await u.writer.write(part);
      } else {
        await u.writer.write(data);
      }
    } finally {
      u.storing = false;
      this.uploads.touch(u);
    }
  }

  private startOrResume(name: string, resource: UploadResource, offset: number): Upload {
    const existing = this.uploads.get(name);
    if (existing?.call) throw new ReprError(Code.ABORTED, `another Write to "${name}" is in progress`);
    if (existing && offset !== 0) return existing;
    if (existing) this.uploads.drop(existing); // restarting from zero
    if (resource.compressor === 'identity' && offset !== 0) {
      throw invalidArgument(`write_offset ${offset} for an upload this server has no record of; start at 0`);
    }
    checkFirstOffset(offset, resource, true);
    return this.uploads.add(name, resource, () => ({
      name,
      resource,
      writer: this.o.cas.beginWrite(resource.digest),
      committed: 0,
      firstOffset: offset,
      ...(resource.compressor === 'zstd' ? { decoder: new ZstdDecoder(resource.digest.sizeBytes) } : {}),
    }));
  }

  /** Drops `u` if it is still registered (a newer attempt may have replaced it), else just discards its bytes. */
  private forget(u: Upload): void {
    if (this.uploads.get(u.name) === u) this.uploads.drop(u);
    else void u.writer.abort();
  }

  async queryWriteStatus(req: QueryWriteStatusRequest): Promise<QueryWriteStatusResponse> {
    const resource = parseWriteResource(req.resourceName);
    this.o.instances.check(resource.instanceName);
    checkBlobSize(resource.digest, this.o.maxBlobSizeBytes);
    if ((await this.o.cas.findMissing([resource.digest])).length === 0) {
      return { committedSize: resource.compressor === 'identity' ? resource.digest.sizeBytes : -1, complete: true };
    }
    const u = this.uploads.get(req.resourceName);
    return { committedSize: u?.committed ?? 0, complete: false };
  }

  /**
   * The service definition with the hand-written codecs for the two messages
   * that carry bytes (see bytestream-codec.ts); everything else is generated.
   */
  definition(): ServiceDefinition {
    const d = ByteStreamService;
    return {
      read: { ...d.read, requestDeserialize: decodeReadRequest, responseSerialize: encodeReadResponse },
      write: { ...d.write, requestDeserialize: decodeWriteRequest },
      queryWriteStatus: d.queryWriteStatus,
    } as unknown as ServiceDefinition;
  }

  handlers() {
    const log = this.o.log;
    return {
      read: serverStreaming(log, 'Read', (r: ReadRequestMsg, call: ServerWritableStream<ReadRequestMsg, Buffer>) => this.read(r, call)),
      write: this.write,
      queryWriteStatus: unary(log, 'QueryWriteStatus', (r: QueryWriteStatusRequest) => this.queryWriteStatus(r)),
    };
  }
}

/**
 * ByteStream's range rules for the first write_offset of a call, checked
 * before anything is stored. For compressed uploads the first offset counts
 * uncompressed bytes; a resumed one continues a count of compressed bytes,
 * which may pass the blob's size, so the upper bound applies only to fresh
 * compressed uploads (`fresh`).
 */
function checkFirstOffset(offset: number, resource: UploadResource, fresh: boolean): void {
  const size = resource.digest.sizeBytes;
  if (offset < 0) throw outOfRange(`write_offset ${int64Text(offset)} is negative`);
  if (offset > size && (resource.compressor === 'identity' || fresh)) {
    throw outOfRange(`write_offset ${int64Text(offset)} is past the end of the ${size}-byte blob`);
  }
}
