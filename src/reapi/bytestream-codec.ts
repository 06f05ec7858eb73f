import { invalidArgument } from '../common/errors.js';
import { readFields, readVarint, varintLength, writeVarint } from './wire.js';

/**
 * Hand-written protobuf codecs for the two messages that carry blob bytes
 * (google.bytestream.WriteRequest and ReadResponse). The generated codecs copy
 * `data` into a fresh buffer; these slice the received frame and build the
 * outgoing one in a single allocation, which is what the hot path needs
 * (measured in `npm run bench -- bytestream`). Wire format must stay in step
 * with google/bytestream/bytestream.proto.
 *
 * The server decodes ReadRequest here too. The generated decoder throws on an
 * int64 beyond 2^53, and grpc-js can only answer a throwing deserializer with
 * INTERNAL; these decoders never throw on a value, so that the service can
 * refuse it with the code ByteStream specifies. Such values arrive as the
 * nearest double, which orders correctly against any blob size.
 */

export interface WriteRequestMsg {
  resourceName: string;
  writeOffset: number;
  finishWrite: boolean;
  data: Buffer;
}

const EMPTY = Buffer.alloc(0);

export function decodeWriteRequest(buf: Buffer): WriteRequestMsg {
  const msg: WriteRequestMsg = { resourceName: '', writeOffset: 0, finishWrite: false, data: EMPTY };
  let pos = 0;
  while (pos < buf.length) {
    let key: number;
    [key, pos] = readVarint(buf, pos);
    const field = Math.floor(key / 8);
    const wire = key & 7;
    if (wire === 0) {
      let v: number;
      [v, pos] = readVarint(buf, pos);
      if (field === 2) {
        msg.writeOffset = v;
      } else if (field === 3) msg.finishWrite = v !== 0;
    } else if (wire === 2) {
      let len: number;
      [len, pos] = readVarint(buf, pos);
      if (pos + len > buf.length) throw invalidArgument('truncated field in WriteRequest');
      if (field === 1) msg.resourceName = buf.toString('utf8', pos, pos + len);
      else if (field === 10) msg.data = buf.subarray(pos, pos + len);
      pos += len;
    } else if (wire === 1) pos += 8;
    else if (wire === 5) pos += 4;
    else throw invalidArgument(`unsupported wire type ${wire} in WriteRequest`);
  }
  return msg;
}

export interface ReadRequestMsg {
  resourceName: string;
  readOffset: number;
  readLimit: number;
}

/** ReadRequest { string resource_name = 1; int64 read_offset = 2; int64 read_limit = 3; } */
export function decodeReadRequest(buf: Buffer): ReadRequestMsg {
  const msg: ReadRequestMsg = { resourceName: '', readOffset: 0, readLimit: 0 };
  readFields(buf, 0, buf.length, 'ReadRequest', {
    bytes: (field, start, stop) => field === 1 && ((msg.resourceName = buf.toString('utf8', start, stop)), true),
    varint: (field, value) => {
      if (field === 2) msg.readOffset = value;
      else if (field === 3) msg.readLimit = value;
      else return false;
      return true;
    },
  });
  return msg;
}

/** ReadResponse { bytes data = 10; } */
export function encodeReadResponse(data: Buffer): Buffer {
  if (data.length === 0) return EMPTY;
  const out = Buffer.allocUnsafe(1 + varintLength(data.length) + data.length);
  out[0] = (10 << 3) | 2;
  const pos = writeVarint(out, 1, data.length);
  data.copy(out, pos);
  return out;
}

/** The inverse of encodeReadResponse, for repr's own clients and tests. */
export function decodeReadResponse(buf: Buffer): Buffer {
  let pos = 0;
  let data: Buffer = EMPTY;
  while (pos < buf.length) {
    let key: number;
    [key, pos] = readVarint(buf, pos);
    if ((key & 7) !== 2) throw invalidArgument('unexpected field in ReadResponse');
    let len: number;
    [len, pos] = readVarint(buf, pos);
    if (key >>> 3 === 10) data = buf.subarray(pos, pos + len);
    pos += len;
  }
  return data;
}

/** WriteRequest encoder, for repr's own clients and tests. */
export function encodeWriteRequest(m: Partial<WriteRequestMsg>): Buffer {
  const name = m.resourceName ? Buffer.from(m.resourceName) : EMPTY;
  const data = m.data ?? EMPTY;
  const off = m.writeOffset ?? 0;
  const size =
    (name.length ? 1 + varintLength(name.length) + name.length : 0) +
    (off ? 1 + varintLength(off) : 0) +
    (m.finishWrite ? 2 : 0) +
    (data.length ? 1 + varintLength(data.length) + data.length : 0);
  const out = Buffer.allocUnsafe(size);
  let pos = 0;
  if (name.length) {
    out[pos++] = (1 << 3) | 2;
    pos = writeVarint(out, pos, name.length);
    pos += name.copy(out, pos);
  }
  if (off) {
    out[pos++] = 2 << 3;
    pos = writeVarint(out, pos, off);
  }
  if (m.finishWrite) {
    out[pos++] = 3 << 3;
    out[pos++] = 1;
  }
  if (data.length) {
    out[pos++] = (10 << 3) | 2;
    pos = writeVarint(out, pos, data.length);
    data.copy(out, pos);
  }
  return out;
}
