import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { describe, it } from 'node:test';
import { Code, codeOf } from '../../../src/common/errors.js';
import {
  decodeFindMissingRequest,
  decodeFindMissingResponse,
  encodeFindMissingRequest,
  encodeFindMissingResponse,
} from '../../../src/reapi/find-missing-codec.js';
import { FindMissingBlobsRequest, FindMissingBlobsResponse } from '../../../src/proto/build/bazel/remote/execution/v2/remote_execution.js';

const digests = [
  { hash: randomBytes(32).toString('hex'), sizeBytes: 0 },
  { hash: randomBytes(32).toString('hex'), sizeBytes: 1 },
  { hash: randomBytes(32).toString('hex'), sizeBytes: 300 },
  { hash: randomBytes(32).toString('hex'), sizeBytes: 2 ** 40 + 7 },
];

describe('FindMissingBlobs codecs (hand-written) agree with the generated ones', () => {
  it('decodes what the generated encoder writes, and the reverse', () => {
    for (const req of [
      { instanceName: '', blobDigests: digests, digestFunction: 0 },
      { instanceName: 'main/ci', blobDigests: digests, digestFunction: 7 },
      { instanceName: 'x', blobDigests: [], digestFunction: 1 },
    ]) {
      const generated = Buffer.from(FindMissingBlobsRequest.encode(req).finish());
      assert.deepEqual(decodeFindMissingRequest(generated), req);
      assert.deepEqual(FindMissingBlobsRequest.decode(encodeFindMissingRequest(req)), req);
      assert.deepEqual(encodeFindMissingRequest(req), generated, 'byte-identical');
    }
    const res = { missingBlobDigests: digests };
    assert.deepEqual(FindMissingBlobsResponse.decode(encodeFindMissingResponse(res)), res);
    assert.deepEqual(decodeFindMissingResponse(Buffer.from(FindMissingBlobsResponse.encode(res).finish())), res);
  });

  it('skips unknown fields and rejects truncated input with INVALID_ARGUMENT', () => {
    const known = Buffer.from(FindMissingBlobsRequest.encode({ instanceName: 'i', blobDigests: digests.slice(1, 2), digestFunction: 1 }).finish());
    // field 9 varint, field 10 length-delimited, field 11 fixed64
    const extra = Buffer.from([9 << 3, 5, (10 << 3) | 2, 2, 0xaa, 0xbb, (11 << 3) | 1, 1, 2, 3, 4, 5, 6, 7, 8]);
    assert.deepEqual(decodeFindMissingRequest(Buffer.concat([extra, known])), { instanceName: 'i', blobDigests: digests.slice(1, 2), digestFunction: 1 });
    for (const cut of [known.length - 1, known.length - 40, 4]) {
      assert.throws(
        () => decodeFindMissingRequest(known.subarray(0, cut)),
        (e: unknown) => codeOf(e) === Code.INVALID_ARGUMENT,
      );
    }
  });
});
