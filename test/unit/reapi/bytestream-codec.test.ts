import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { decodeReadRequest, decodeReadResponse, decodeWriteRequest, encodeReadResponse, encodeWriteRequest } from '../../../src/reapi/bytestream-codec.js';
import { ReadRequest, ReadResponse, WriteRequest } from '../../../src/proto/google/bytestream/bytestream.js';

// The hand-written codecs must agree byte for byte with the generated ones.
describe('hand-written ByteStream codecs', () => {
  it('decode WriteRequests the generated encoder wrote', () => {
    for (const m of [
      { resourceName: 'uploads/u/blobs/x/3', writeOffset: 0, finishWrite: false, data: Buffer.from('abc') },
      { resourceName: '', writeOffset: 2 ** 40, finishWrite: true, data: Buffer.alloc(70000, 1) },
      { resourceName: 'é/uploads', writeOffset: 5, finishWrite: true, data: Buffer.alloc(0) },
    ]) {
      const wire = Buffer.from(WriteRequest.encode(m).finish());
      assert.deepEqual(decodeWriteRequest(wire), m);
      assert.deepEqual(encodeWriteRequest(m), wire);
    }
  });

  it('decodes a negative write_offset as negative', () => {
    const wire = Buffer.from(WriteRequest.encode({ resourceName: 'r', writeOffset: -1, finishWrite: false, data: Buffer.alloc(0) }).finish());
    assert.equal(decodeWriteRequest(wire).writeOffset, -1);
  });

  it('encode ReadResponses the generated decoder reads', () => {
    for (const data of [Buffer.from('x'), Buffer.alloc(1 << 20, 9), Buffer.alloc(0)]) {
      const wire = encodeReadResponse(data);
      assert.deepEqual(Buffer.from(ReadResponse.decode(wire).data), data);
      assert.deepEqual(decodeReadResponse(wire), data);
    }
  });

  it('rejects truncated input', () => {
    const wire = Buffer.from(WriteRequest.encode({ resourceName: 'r', writeOffset: 0, finishWrite: false, data: Buffer.alloc(10) }).finish());
    assert.throws(() => decodeWriteRequest(wire.subarray(0, wire.length - 3)), /truncated/);
  });
});

describe('hand-written ReadRequest decoder', () => {
  it('decodes what the generated encoder wrote', () => {
    for (const m of [
      { resourceName: 'blobs/abc/10', readOffset: 0, readLimit: 0 },
      { resourceName: 'main/blobs/abc/10', readOffset: 2 ** 40, readLimit: 5 },
      { resourceName: 'é', readOffset: -1, readLimit: -7 },
    ]) {
      assert.deepEqual(decodeReadRequest(Buffer.from(ReadRequest.encode(m).finish())), m);
    }
  });

  it('decodes int64 values past 2^53 instead of throwing, preserving their order', () => {
    // read_offset = 2^63 - 1 (nine 0xff bytes then 0x7f), read_limit = -2^63.
    const wire = Buffer.from([0x10, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f, 0x18, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01]);
    assert.throws(() => ReadRequest.decode(wire), /MAX_SAFE_INTEGER/, 'the generated decoder cannot');
    const m = decodeReadRequest(wire);
    assert.ok(m.readOffset > Number.MAX_SAFE_INTEGER);
    assert.ok(m.readLimit < Number.MIN_SAFE_INTEGER);
  });
});
