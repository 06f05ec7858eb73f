import type {
  handleClientStreamingCall,
  ServerReadableStream,
  ServerWritableStream,
  ServiceDefinition,
} from '@grpc/grpc-js';
import { digestString } from '../common/digest.js';
import { Code, invalidArgument, ReprError } from '../common/errors.js';
import type { Logger } from '../common/logger.js';
import type { BlobStore, BlobWriter } from '../storage/blob-store.js';
import {
  ByteStreamService,
  type QueryWriteStatusRequest,
  type QueryWriteStatusResponse,
  type ReadRequest,
  type WriteResponse,
} from '../proto/google/bytestream/bytestream.js';
import { drained, serverStreaming, toServiceError, unary } from '../server/grpc-util.js';
import { decodeWriteRequest, encodeReadResponse, type WriteRequestMsg } from './bytestream-codec.js';
import type { InstanceNames } from './instances.js';
import { parseReadResource, parseWriteResource, type UploadResource } from './resource-name.js';
import { ZstdDecoder, ZstdEncoder } from './zstd.js';

export interface ByteStreamServiceOptions {
  cas: BlobStore;
  instances: InstanceNames;
  log: Logger;
  /** Largest `data` sent in one ReadResponse. */
  readChunkBytes?: number;
  /** How long an interrupted upload is kept for QueryWriteStatus and resumption. */
  uploadIdleMs?: number;
  /** Most interrupted uploads kept at once; the oldest are dropped first. */
  maxPendingUploads?: number;
}

/** A partly received upload, kept so that a client can resume it. */
interface Upload {
  resource: UploadResource;
  writer: BlobWriter;
  decoder?: ZstdDecoder;
  /** Bytes received as the client counts them (compressed bytes for compressed uploads). */
  committed: number;
  /** The offset the client started from; offsets of compressed uploads are relative to it. */
  firstOffset: number;
  busy: boolean;
  lastUsed: number;
}

/**
 * google.bytestream.ByteStream over the CAS: Read with offset/limit, resumable
 * Write, QueryWriteStatus, and REAPI's compressed-blobs/zstd resource names.
 * Every byte written is verified against the digest before the blob exists.
 */
export class ByteStreamServiceImpl {
  private readonly uploads = new Map<string, Upload>();
  private readonly readChunk: number;
  private readonly idleMs: number;
  private readonly maxPending: number;
  private readonly sweeper: NodeJS.Timeout;

  constructor(private readonly o: ByteStreamServiceOptions) {
    this.readChunk = o.readChunkBytes ?? 1024 * 1024;
    this.idleMs = o.uploadIdleMs ?? 10 * 60_000;
    this.maxPending = o.maxPendingUploads ?? 1000;
    this.sweeper = setInterval(() => this.sweep(), Math.min(this.idleMs, 60_000));
    this.sweeper.unref();
  }

  close(): void {
    clearInterval(this.sweeper);
    for (const u of this.uploads.values()) void u.writer.abort();
    this.uploads.clear();
  }

  private sweep(now = Date.now()): void {
    for (const [name, u] of this.uploads) {
      if (!u.busy && now - u.lastUsed > this.idleMs) this.drop(name, u);
    }
  }

  private drop(name: string, u: Upload): void {
    this.uploads.delete(name);
    void u.writer.abort();
  }

  async read(req: ReadRequest, call: ServerWritableStream<ReadRequest, Buffer>): Promise<void> {
    const res = parseReadResource(req.resourceName);
    this.o.instances.check(res.instanceName);
    if (req.readOffset < 0) throw invalidArgument(`read_offset ${req.readOffset} is negative`);
    if (req.readLimit < 0) throw invalidArgument(`read_limit ${req.readLimit} is negative`);
    const stream = await this.o.cas.read(res.digest, req.readOffset, req.readLimit);
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
    try {
      for await (const m of call as AsyncIterable<WriteRequestMsg>) {
        if (!upload) {
          name = m.resourceName;
          if (!name) throw invalidArgument('the first WriteRequest must name the resource');
          const resource = parseWriteResource(name);
          this.o.instances.check(resource.instanceName);
          if ((await this.o.cas.findMissing([resource.digest])).length === 0) {
            // REAPI: a blob that already exists ends the upload at once, successfully.
            this.forget(name, this.uploads.get(name));
            return { committedSize: resource.compressor === 'identity' ? resource.digest.sizeBytes : -1 };
          }
          upload = this.startOrResume(name, resource, m.writeOffset);
        } else if (m.resourceName && m.resourceName !== name) {
          throw invalidArgument(`resource_name changed mid-stream from "${name}" to "${m.resourceName}"`);
        }
        const expected = upload.committed + (upload.decoder ? upload.firstOffset : 0);
        if (m.writeOffset !== expected) {
          throw invalidArgument(`write_offset ${m.writeOffset} does not continue the upload: expected ${expected}`);
        }
        if (m.data.length > 0) {
          dataFailed = true; // until the bytes are safely written
          if (upload.decoder) {
            for (const part of upload.decoder.push(m.data)) await upload.writer.write(part);
          } else {
            await upload.writer.write(m.data);
          }
          dataFailed = false;
          upload.committed += m.data.length;
        }
        upload.lastUsed = Date.now();
        if (m.finishWrite) {
          // Whatever happens now, this upload is over: committed or refused.
          this.uploads.delete(name);
          dataFailed = true;
          upload.decoder?.finish();
          await upload.writer.commit();
          return { committedSize: upload.committed };
        }
      }
    } catch (e) {
      // Bytes that failed verification or storage poison the upload; a bad
      // offset or a broken connection leaves it intact for resumption.
      if (upload && dataFailed) this.forget(name, upload);
      throw e;
    } finally {
      if (upload) upload.busy = false;
    }
    if (!upload) throw invalidArgument('Write stream carried no WriteRequest');
    if (call.cancelled) throw new ReprError(Code.CANCELLED, 'client cancelled the upload');
    throw invalidArgument(`upload of ${digestString(upload.resource.digest)} ended at ${upload.committed} bytes without finish_write; resume it from there`);
  }

  private startOrResume(name: string, resource: UploadResource, offset: number): Upload {
    const existing = this.uploads.get(name);
    if (existing?.busy) throw new ReprError(Code.ABORTED, `another Write to "${name}" is in progress`);
    if (existing && offset !== 0) {
      existing.busy = true;
      return existing;
    }
    if (existing) this.drop(name, existing); // restarting from zero
    if (resource.compressor === 'identity' && offset !== 0) {
      throw invalidArgument(`write_offset ${offset} for an upload this server has no record of; start at 0`);
    }
    while (this.uploads.size >= this.maxPending) {
      const [oldName, old] = this.uploads.entries().next().value as [string, Upload];
      this.drop(oldName, old);
    }
    const u: Upload = {
      resource,
      writer: this.o.cas.beginWrite(resource.digest),
      committed: 0,
      firstOffset: offset,
      busy: true,
      lastUsed: Date.now(),
      ...(resource.compressor === 'zstd' ? { decoder: new ZstdDecoder(resource.digest.sizeBytes) } : {}),
    };
    this.uploads.set(name, u);
    return u;
  }

  /** Drops `name`'s upload if it is still `u` (a newer attempt may have replaced it). */
  private forget(name: string, u: Upload | undefined): void {
    if (u && this.uploads.get(name) === u) this.drop(name, u);
    else if (u) void u.writer.abort();
  }

  async queryWriteStatus(req: QueryWriteStatusRequest): Promise<QueryWriteStatusResponse> {
    const resource = parseWriteResource(req.resourceName);
    this.o.instances.check(resource.instanceName);
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
      read: { ...d.read, responseSerialize: encodeReadResponse },
      write: { ...d.write, requestDeserialize: decodeWriteRequest },
      queryWriteStatus: d.queryWriteStatus,
    } as unknown as ServiceDefinition;
  }

  handlers() {
    const log = this.o.log;
    return {
      read: serverStreaming(log, 'Read', (r: ReadRequest, call: ServerWritableStream<ReadRequest, Buffer>) => this.read(r, call)),
      write: this.write,
      queryWriteStatus: unary(log, 'QueryWriteStatus', (r: QueryWriteStatusRequest) => this.queryWriteStatus(r)),
    };
  }
}
