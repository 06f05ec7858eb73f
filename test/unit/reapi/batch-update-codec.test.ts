import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { decodeBatchUpdateRequest } from '../../../src/reapi/batch-update-codec.js';
import { BatchUpdateBlobsRequest, Compressor_Value, DigestFunction_Value } from '../../../src/proto/build/bazel/remote/execution/v2/remote_execution.js';

describe('hand-written BatchUpdateBlobsRequest decoder', () => {
  it('agrees with the generated decoder', () => {
    for (const m of [
      BatchUpdateBlobsRequest.fromPartial({}),
      BatchUpdateBlobsRequest.fromPartial({
        instanceName: 'main/é',
        digestFunction: DigestFunction_Value.BLAKE3,
        requests: [
          { digest: { hash: 'a'.repeat(64), sizeBytes: 3 }, data: Buffer.from('abc'), compressor: Compressor_Value.IDENTITY },
          { digest: { hash: 'b'.repeat(64), sizeBytes: 2 ** 40 }, data: Buffer.alloc(70_000, 1), compressor: Compressor_Value.ZSTD },
          { digest: { hash: '', sizeBytes: -1 }, data: Buffer.alloc(0), compressor: Compressor_Value.IDENTITY },
          { digest: undefined, data: Buffer.from('x'), compressor: Compressor_Value.IDENTITY },
        ],
      }),
    ]) {
      const wire = Buffer.from(BatchUpdateBlobsRequest.encode(m).finish());
      assert.deepEqual(decodeBatchUpdateRequest(wire), BatchUpdateBlobsRequest.decode(wire));
    }
  });

  it('decodes a size_bytes past 2^53, where the generated decoder throws', () => {
    const m = BatchUpdateBlobsRequest.fromPartial({ requests: [{ digest: { hash: 'c'.repeat(64), sizeBytes: 2 ** 62 }, data: Buffer.from('c') }] });
    const wire = Buffer.from(BatchUpdateBlobsRequest.encode(m).finish());
    assert.throws(() => BatchUpdateBlobsRequest.decode(wire), /MAX_SAFE_INTEGER/);
    assert.equal(decodeBatchUpdateRequest(wire).requests[0]!.digest?.sizeBytes, 2 ** 62);
  });

  it('rejects truncated input', () => {
    const wire = Buffer.from(BatchUpdateBlobsRequest.encode(BatchUpdateBlobsRequest.fromPartial({ requests: [{ data: Buffer.alloc(10) }] })).finish());
    assert.throws(() => decodeBatchUpdateRequest(wire.subarray(0, wire.length - 3)), /truncated/);
  });
});
