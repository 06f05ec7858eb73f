import { invalidArgument } from '../common/errors.js';
import type { BatchUpdateBlobsRequest, BatchUpdateBlobsRequest_Request } from '../proto/build/bazel/remote/execution/v2/remote_execution.js';
import { decodeDigest } from './find-missing-codec.js';
import { readVarint, skipField } from './wire.js';

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
  while (pos < end) {
    let key: number;
    [key, pos] = readVarint(buf, pos);
    const field = key >>> 3;
    const wire = key & 7;
    if ((field === 1 || field === 2) && wire === 2) {
      let len: number;
      [len, pos] = readVarint(buf, pos);
      if (pos + len > end) throw invalidArgument('truncated field in BatchUpdateBlobsRequest.Request');
      if (field === 1) r.digest = decodeDigest(buf, pos, pos + len);
      else r.data = buf.subarray(pos, pos + len);
      pos += len;
    } else if (field === 3 && wire === 0) {
      [r.compressor, pos] = readVarint(buf, pos);
    } else pos = skipField(buf, pos, wire, 'BatchUpdateBlobsRequest.Request');
  }
  return r;
}

/** BatchUpdateBlobsRequest { string instance_name = 1; repeated Request requests = 2; DigestFunction.Value digest_function = 5; } */
export function decodeBatchUpdateRequest(buf: Buffer): BatchUpdateBlobsRequest {
  const msg: BatchUpdateBlobsRequest = { instanceName: '', requests: [], digestFunction: 0 };
  let pos = 0;
  while (pos < buf.length) {
    let key: number;
    [key, pos] = readVarint(buf, pos);
    const field = key >>> 3;
    const wire = key & 7;
    if ((field === 1 || field === 2) && wire === 2) {
      let len: number;
      [len, pos] = readVarint(buf, pos);
      if (pos + len > buf.length) throw invalidArgument('truncated field in BatchUpdateBlobsRequest');
      if (field === 1) msg.instanceName = buf.toString('utf8', pos, pos + len);
      else msg.requests.push(decodeRequest(buf, pos, pos + len));
      pos += len;
    } else if (field === 5 && wire === 0) {
      [msg.digestFunction, pos] = readVarint(buf, pos);
    } else pos = skipField(buf, pos, wire, 'BatchUpdateBlobsRequest');
  }
  return msg;
}
