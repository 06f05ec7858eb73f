import type { BatchUpdateBlobsRequest, BatchUpdateBlobsRequest_Request } from '../proto/build/bazel/remote/execution/v2/remote_execution.js';
import { decodeDigest } from './find-missing-codec.js';
import { readFields } from './wire.js';

/**
 * A hand-written decoder for BatchUpdateBlobsRequest. The generated one
 * throws on a size_bytes beyond 2^53, which grpc-js turns into INTERNAL for
 * the whole batch; REAPI wants INVALID_ARGUMENT for that blob alone, so sizes
 * must reach the service whatever they are. It also slices `data` from the
 * received frame instead of copying it. The shapes are those of the
 * generated types; the wire format must stay in step with remote_execution.proto.
 */

/** BatchUpdateBlobsRequest.Request { Digest digest = 1; bytes data = 2; Compressor.Value compressor = 3; } */
function decodeRequest(buf: Buffer, pos: number, end: number): BatchUpdateBlobsRequest_Request {
  const r: BatchUpdateBlobsRequest_Request = { digest: undefined, data: Buffer.alloc(0), compressor: 0 };
  readFields(buf, pos, end, 'BatchUpdateBlobsRequest.Request', {
    bytes: (field, start, stop) => {
      if (field === 1) r.digest = decodeDigest(buf, start, stop);
      else if (field === 2) r.data = buf.subarray(start, stop);
      else return false;
      return true;
    },
    varint: (field, value) => field === 3 && ((r.compressor = value), true),
  });
  return r;
}

/** BatchUpdateBlobsRequest { string instance_name = 1; repeated Request requests = 2; DigestFunction.Value digest_function = 5; } */
export function decodeBatchUpdateRequest(buf: Buffer): BatchUpdateBlobsRequest {
  const msg: BatchUpdateBlobsRequest = { instanceName: '', requests: [], digestFunction: 0 };
  readFields(buf, 0, buf.length, 'BatchUpdateBlobsRequest', {
    bytes: (field, start, stop) => {
      if (field === 1) msg.instanceName = buf.toString('utf8', start, stop);
      else if (field === 2) msg.requests.push(decodeRequest(buf, start, stop));
      else return false;
      return true;
    },
    varint: (field, value) => field === 5 && ((msg.digestFunction = value), true),
  });
  return msg;
}
