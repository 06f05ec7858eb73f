import { invalidArgument } from '../common/errors.js';
import { readVarint, skipField, varintLength, writeVarint } from './wire.js';

/**
 * Hand-written codecs for FindMissingBlobs, the call Bazel makes before every
 * upload with up to thousands of digests. The generated codecs build a
 * message object per digest through a general reader (64-bit size handling,
 * UTF-8 decoding); these read hashes as Latin-1 (valid ones are ASCII hex,
 * and every hash is validated afterwards) and write the response in one
 * allocation. Measured with `npm run bench -- find-missing`. The shapes are
 * those of the generated types, so the service code does not change; the
 * wire format must stay in step with remote_execution.proto.
 */

export interface WireDigest {
  hash: string;
  sizeBytes: number;
}

export interface FindMissingRequestMsg {
  instanceName: string;
  blobDigests: WireDigest[];
  digestFunction: number;
}

export function decodeDigest(buf: Buffer, pos: number, end: number): WireDigest {
  const d: WireDigest = { hash: '', sizeBytes: 0 };
  while (pos < end) {
    let key: number;
    [key, pos] = readVarint(buf, pos);
    const field = key >>> 3;
    const wire = key & 7;
    if (field === 1 && wire === 2) {
      let len: number;
      [len, pos] = readVarint(buf, pos);
      if (pos + len > end) throw invalidArgument('truncated hash in Digest');
      d.hash = buf.toString('latin1', pos, pos + len);
      pos += len;
    } else if (field === 2 && wire === 0) {
      [d.sizeBytes, pos] = readVarint(buf, pos);
    } else pos = skipField(buf, pos, wire, 'Digest');
  }
  return d;
}

/** FindMissingBlobsRequest { string instance_name = 1; repeated Digest blob_digests = 2; DigestFunction.Value digest_function = 3; } */
export function decodeFindMissingRequest(buf: Buffer): FindMissingRequestMsg {
  const msg: FindMissingRequestMsg = { instanceName: '', blobDigests: [], digestFunction: 0 };
  let pos = 0;
  while (pos < buf.length) {
    let key: number;
    [key, pos] = readVarint(buf, pos);
    const field = key >>> 3;
    const wire = key & 7;
    if (wire === 2 && (field === 1 || field === 2)) {
      let len: number;
      [len, pos] = readVarint(buf, pos);
      if (pos + len > buf.length) throw invalidArgument('truncated field in FindMissingBlobsRequest');
      if (field === 1) msg.instanceName = buf.toString('utf8', pos, pos + len);
      else msg.blobDigests.push(decodeDigest(buf, pos, pos + len));
      pos += len;
    } else if (field === 3 && wire === 0) {
      [msg.digestFunction, pos] = readVarint(buf, pos);
    } else pos = skipField(buf, pos, wire, 'FindMissingBlobsRequest');
  }
  return msg;
}

function digestLength(d: WireDigest): number {
  return 1 + varintLength(d.hash.length) + d.hash.length + (d.sizeBytes ? 1 + varintLength(d.sizeBytes) : 0);
}

/** Writes `repeated Digest` under `field`; hashes must be ASCII (validated digests are). */
function encodeDigests(field: number, digests: readonly WireDigest[], prefix: Buffer): Buffer {
  const lengths = digests.map(digestLength);
  let size = prefix.length;
  for (const n of lengths) size += 1 + varintLength(n) + n;
  const out = Buffer.allocUnsafe(size);
  let pos = prefix.copy(out, 0);
  for (const [i, d] of digests.entries()) {
    out[pos++] = (field << 3) | 2;
    pos = writeVarint(out, pos, lengths[i]!);
    out[pos++] = (1 << 3) | 2;
    pos = writeVarint(out, pos, d.hash.length);
    pos += out.write(d.hash, pos, 'latin1');
    if (d.sizeBytes) {
      out[pos++] = 2 << 3;
      pos = writeVarint(out, pos, d.sizeBytes);
    }
  }
  return out;
}

/** FindMissingBlobsResponse { repeated Digest missing_blob_digests = 2; } */
export function encodeFindMissingResponse(m: { missingBlobDigests: readonly WireDigest[] }): Buffer {
  return encodeDigests(2, m.missingBlobDigests, Buffer.alloc(0));
}

/** The inverse of encodeFindMissingResponse, for repr's own clients. */
export function decodeFindMissingResponse(buf: Buffer): { missingBlobDigests: WireDigest[] } {
  const out: WireDigest[] = [];
  let pos = 0;
  while (pos < buf.length) {
    let key: number;
    [key, pos] = readVarint(buf, pos);
    if (key >>> 3 === 2 && (key & 7) === 2) {
      let len: number;
      [len, pos] = readVarint(buf, pos);
      out.push(decodeDigest(buf, pos, pos + len));
      pos += len;
    } else pos = skipField(buf, pos, key & 7, 'FindMissingBlobsResponse');
  }
  return { missingBlobDigests: out };
}

/** The inverse of decodeFindMissingRequest, for repr's own clients. */
export function encodeFindMissingRequest(m: FindMissingRequestMsg): Buffer {
  const name = Buffer.from(m.instanceName);
  const head = Buffer.allocUnsafe(name.length ? 1 + varintLength(name.length) + name.length : 0);
  if (name.length) {
    head[0] = (1 << 3) | 2;
    name.copy(head, writeVarint(head, 1, name.length));
  }
  const body = encodeDigests(2, m.blobDigests, head);
  if (!m.digestFunction) return body;
  const tail = Buffer.allocUnsafe(1 + varintLength(m.digestFunction));
  tail[0] = 3 << 3;
  writeVarint(tail, 1, m.digestFunction);
  return Buffer.concat([body, tail]);
}
