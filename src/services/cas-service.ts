import type { ServerWritableStream } from '@grpc/grpc-js';
import { checkBlobSize, type Digest, type DigestFunction, digestFunctionFromValue, digestString, fromWire, toWire } from '../common/digest.js';
import { Code, codeOf, invalidArgument, toReprError } from '../common/errors.js';
import type { Logger } from '../common/logger.js';
import type { BlobStore } from '../storage/blob-store.js';
import { decodeBatchUpdateRequest } from '../reapi/batch-update-codec.js';
import { decodeFindMissingRequest, encodeFindMissingResponse, type WireDigest } from '../reapi/find-missing-codec.js';
import {
  type BatchReadBlobsRequest,
  type BatchReadBlobsResponse,
  type BatchReadBlobsResponse_Response,
  type BatchUpdateBlobsRequest,
  type BatchUpdateBlobsResponse,
  Compressor_Value,
  type ContentAddressableStorageServer,
  ContentAddressableStorageService,
  Directory,
  type FindMissingBlobsRequest,
  type FindMissingBlobsResponse,
  type GetTreeRequest,
  type GetTreeResponse,
} from '../proto/build/bazel/remote/execution/v2/remote_execution.js';
import { drained, serverStreaming, unary } from '../grpc/handlers.js';
import type { InstanceNames } from './instances.js';
import { compressBuffer, decompressBounded } from '../reapi/zstd.js';

export interface CasServiceOptions {
  cas: BlobStore;
  instances: InstanceNames;
  log: Logger;
  maxBatchTotalSizeBytes: number;
  /** Largest blob accepted (REAPI's max_cas_blob_size_bytes). */
  maxBlobSizeBytes: number;
}

/** Below this size zstd saves too little to be worth the CPU. */
const MIN_COMPRESS_BYTES = 2048;

/** Directories per GetTree page when the client does not ask for fewer. */
const DEFAULT_TREE_PAGE = 1000;

export class CasService {
  constructor(private readonly o: CasServiceOptions) {}

  async findMissingBlobs(req: FindMissingBlobsRequest): Promise<FindMissingBlobsResponse> {
    this.o.instances.check(req.instanceName);
    const fn = digestFunctionFromValue(req.digestFunction);
    const digests = req.blobDigests.map((d, i) => this.uploadable(fn, d, `blob_digests[${i}]`));
    const missing = await this.o.cas.findMissing(digests);
    return { missingBlobDigests: missing.map(toWire) };
  }

  async batchUpdateBlobs(req: BatchUpdateBlobsRequest): Promise<BatchUpdateBlobsResponse> {
    this.o.instances.check(req.instanceName);
    const fn = digestFunctionFromValue(req.digestFunction);
    const total = req.requests.reduce((n, r) => n + r.data.length, 0);
    if (total > this.o.maxBatchTotalSizeBytes) {
      throw invalidArgument(
        `BatchUpdateBlobs carries ${total} bytes, more than max_batch_total_size_bytes (${this.o.maxBatchTotalSizeBytes}); upload large blobs with ByteStream.Write`,
      );
    }
    const responses = await Promise.all(
      req.requests.map(async (r, i) => {
        let digest: Digest;
        try {
          digest = this.uploadable(fn, r.digest, `requests[${i}].digest`);
        } catch (e) {
          // REAPI reports a bad digest in that blob's status; its neighbours still go in.
          return { digest: r.digest, status: statusOf(e) };
        }
        try {
          const data = decode(r.compressor, r.data, digest);
          await this.o.cas.put(digest, data);
          return { digest: toWire(digest), status: { code: Code.OK, message: '', details: [] } };
        } catch (e) {
          return { digest: toWire(digest), status: statusOf(e) };
        }
      }),
    );
    return { responses };
  }

  /** A wire digest of a blob a client may upload: well formed and within the size limit. */
  private uploadable(fn: DigestFunction, d: WireDigest | undefined, field: string): Digest {
    const digest = fromWire(fn, d, field);
    try {
      checkBlobSize(digest, this.o.maxBlobSizeBytes);
    } catch (e) {
      throw toReprError(e, field);
    }
    return digest;
  }

  async batchReadBlobs(req: BatchReadBlobsRequest): Promise<BatchReadBlobsResponse> {
    this.o.instances.check(req.instanceName);
    const fn = digestFunctionFromValue(req.digestFunction);
    const digests = req.digests.map((d, i) => fromWire(fn, d, `digests[${i}]`));
    const total = digests.reduce((n, d) => n + d.sizeBytes, 0);
    if (total > this.o.maxBatchTotalSizeBytes) {
      throw invalidArgument(
        `BatchReadBlobs asks for ${total} bytes, more than max_batch_total_size_bytes (${this.o.maxBatchTotalSizeBytes}); read large blobs with ByteStream.Read`,
      );
    }
    const zstdOk = req.acceptableCompressors.includes(Compressor_Value.ZSTD);
    const responses = await Promise.all(
      digests.map(async (digest): Promise<BatchReadBlobsResponse_Response> => {
        try {
          const data = await this.o.cas.get(digest);
          if (zstdOk && data.length >= MIN_COMPRESS_BYTES) {
            return { digest: toWire(digest), data: compressBuffer(data), compressor: Compressor_Value.ZSTD, status: okStatus() };
          }
          return { digest: toWire(digest), data, compressor: Compressor_Value.IDENTITY, status: okStatus() };
        } catch (e) {
          return { digest: toWire(digest), data: Buffer.alloc(0), compressor: Compressor_Value.IDENTITY, status: statusOf(e) };
        }
      }),
    );
    return { responses };
  }

  /**
   * Streams the directories under a root, breadth first, without duplicates,
   * in pages. The page token is the number of directories already returned,
   * so a resumed call re-walks the tree up to there: no server-side state.
   * Missing subtrees are left out, as REAPI allows.
   */
  async getTree(req: GetTreeRequest, call: ServerWritableStream<GetTreeRequest, GetTreeResponse>): Promise<void> {
    this.o.instances.check(req.instanceName);
    const fn = digestFunctionFromValue(req.digestFunction);
    const root = fromWire(fn, req.rootDigest, 'root_digest');
    if (req.pageSize < 0) throw invalidArgument(`page_size ${req.pageSize} is negative`);
    const pageSize = req.pageSize > 0 ? Math.min(req.pageSize, DEFAULT_TREE_PAGE) : DEFAULT_TREE_PAGE;
    let skip = 0;
    if (req.pageToken) {
      skip = Number(req.pageToken);
      if (!/^\d+$/.test(req.pageToken)) throw invalidArgument(`page_token "${req.pageToken}" was not issued by this server`);
    }
    const rootData = await this.o.cas.get(root).catch((e: unknown) => {
      throw toReprError(e, 'root_digest');
    });

    // A full page waits in `pending` until we know whether another follows,
    // so that only the last page has an empty next_page_token.
    let pending: Directory[] | undefined;
    let page: Directory[] = [];
    let returned = skip;
    const emit = async (dirs: Directory[], last: boolean) => {
      returned += dirs.length;
      if (!call.write({ directories: dirs, nextPageToken: last ? '' : String(returned) })) await drained(call);
    };

    let index = 0;
    const seen = new Set<string>([root.hash]);
    let level: { digest: Digest; data?: Buffer }[] = [{ digest: root, data: rootData }];
    while (level.length > 0) {
      const next: { digest: Digest }[] = [];
      // Fetch a whole level at once so that the store's round trips overlap.
      const datas = await Promise.all(level.map((n) => n.data ?? this.o.cas.get(n.digest).catch(() => undefined)));
      for (let i = 0; i < level.length; i++) {
        const data = datas[i];
        if (!data) continue;
        let dir: Directory;
        try {
          dir = Directory.decode(data);
        } catch {
          throw invalidArgument(`blob ${digestString(level[i]!.digest)} in the tree is not a Directory message`);
        }
        for (const child of dir.directories) {
          const cd = fromWire(fn, child.digest, `directory "${child.name}"`);
          if (seen.has(cd.hash)) continue;
          seen.add(cd.hash);
          next.push({ digest: cd });
        }
        if (index++ < skip) continue;
        if (pending) {
          await emit(pending, false);
          pending = undefined;
        }
        page.push(dir);
        if (page.length === pageSize) {
          pending = page;
          page = [];
        }
      }
      level = next;
    }
    await emit(pending ?? page, true);
  }

  /** grpc-js handlers, errors mapped in one place. */
  handlers(): ContentAddressableStorageServer {
    const log = this.o.log;
    return {
      findMissingBlobs: unary(log, 'FindMissingBlobs', (r) => this.findMissingBlobs(r)),
      batchUpdateBlobs: unary(log, 'BatchUpdateBlobs', (r) => this.batchUpdateBlobs(r)),
      batchReadBlobs: unary(log, 'BatchReadBlobs', (r) => this.batchReadBlobs(r)),
      getTree: serverStreaming(log, 'GetTree', (r, call) => this.getTree(r, call)),
    };
  }

  /**
   * The generated service, with the hand-written FindMissingBlobs codecs (the
   * hot call) and BatchUpdateBlobs decoder (see batch-update-codec.ts).
   */
  static readonly definition = {
    ...ContentAddressableStorageService,
    findMissingBlobs: {
      ...ContentAddressableStorageService.findMissingBlobs,
      requestDeserialize: decodeFindMissingRequest,
      responseSerialize: encodeFindMissingResponse,
    },
    batchUpdateBlobs: { ...ContentAddressableStorageService.batchUpdateBlobs, requestDeserialize: decodeBatchUpdateRequest },
  };
}

function decode(compressor: Compressor_Value, data: Buffer, digest: Digest): Buffer {
  switch (compressor) {
    case Compressor_Value.IDENTITY:
      return data;
    case Compressor_Value.ZSTD:
      return decompressBounded(data, digest.sizeBytes);
    default:
      throw invalidArgument(`unsupported compressor ${Compressor_Value[compressor] ?? compressor} (supported: IDENTITY, ZSTD)`);
  }
}

function okStatus() {
  return { code: Code.OK, message: '', details: [] };
}

function statusOf(e: unknown) {
  return { code: codeOf(e), message: e instanceof Error ? e.message : String(e), details: [] };
}
