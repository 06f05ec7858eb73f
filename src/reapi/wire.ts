import { invalidArgument } from '../common/errors.js';

/** Protobuf varints for the hand-written codecs of the hot paths. */

export function readVarint(buf: Buffer, pos: number): [value: number, next: number] {
  let result = 0;
  let mul = 1;
  const start = pos;
  for (let i = 0; i < 10; i++) {
    if (pos >= buf.length) throw invalidArgument('truncated varint in request');
    const b = buf[pos++]!;
    if (i === 7 && b & 0x80) return readLongVarint(buf, start);
    result += (b & 0x7f) * mul;
    if ((b & 0x80) === 0) return [result, pos];
    mul *= 128;
  }
  throw invalidArgument('malformed varint in request');
}

/** Varints past 56 bits (negative int64s among them) need exact 64-bit arithmetic. */
function readLongVarint(buf: Buffer, pos: number): [value: number, next: number] {
  let v = 0n;
  for (let i = 0; i < 10; i++) {
    if (pos >= buf.length) throw invalidArgument('truncated varint in request');
    const b = buf[pos++]!;
    v |= BigInt(b & 0x7f) << BigInt(7 * i);
    if ((b & 0x80) === 0) return [Number(BigInt.asIntN(64, v)), pos];
  }
  throw invalidArgument('malformed varint in request');
}

export function varintLength(n: number): number {
  if (n < 0) return 10; // int64 two's complement
  let len = 1;
  while (n >= 128) {
    n = Math.floor(n / 128);
    len++;
  }
  return len;
}

export function writeVarint(buf: Buffer, pos: number, n: number): number {
  if (n < 0) {
    // Only a client sending a bad size writes one; the server then rejects it.
    let v = BigInt.asUintN(64, BigInt(n));
    for (let i = 0; i < 9; i++) {
      buf[pos++] = Number(v & 0x7fn) | 0x80;
      v >>= 7n;
    }
    buf[pos++] = Number(v);
    return pos;
  }
  while (n >= 128) {
    buf[pos++] = (n % 128) | 0x80;
    n = Math.floor(n / 128);
  }
  buf[pos++] = n;
  return pos;
}

/** Skips a field of the given wire type; returns the position after it. */
export function skipField(buf: Buffer, pos: number, wire: number, what: string): number {
  if (wire === 0) return readVarint(buf, pos)[1];
  if (wire === 1) return pos + 8;
  if (wire === 5) return pos + 4;
  if (wire === 2) {
    const [len, p] = readVarint(buf, pos);
    return p + len;
  }
  throw invalidArgument(`unsupported wire type ${wire} in ${what}`);
}

/** What a hand-written decoder does with the fields it knows; each returns false for a field it does not take. */
export interface FieldHandlers {
  /** A length-delimited field (string, bytes, sub-message) at buf[start, end). */
  bytes?(field: number, start: number, end: number): boolean;
  varint?(field: number, value: number): boolean;
}

/**
 * Walks the fields of one message in buf[pos, end): the loop every
 * hand-written decoder shares, with the bounds check of length-delimited
 * fields in one place. Fields no handler takes are skipped.
 */
export function readFields(buf: Buffer, pos: number, end: number, what: string, on: FieldHandlers): void {
  while (pos < end) {
    let key: number;
    [key, pos] = readVarint(buf, pos);
    const field = key >>> 3;
    const wire = key & 7;
    if (wire === 2 && on.bytes) {
      const [len, start] = readVarint(buf, pos);
      if (start + len > end) throw invalidArgument(`truncated field in ${what}`);
      if (on.bytes(field, start, start + len)) {
        pos = start + len;
        continue;
      }
    } else if (wire === 0 && on.varint) {
      const [value, next] = readVarint(buf, pos);
      if (on.varint(field, value)) {
        pos = next;
        continue;
      }
    }
    pos = skipField(buf, pos, wire, what);
  }
}
