import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { decodeReadResponse, decodeWriteRequest, encodeReadResponse, encodeWriteRequest } from '../../../src/cas/bytestream-codec.js';
import { ReadResponse, WriteRequest } from '../../../src/proto/google/bytestream/bytestream.js';

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
