import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { BLAKE3, SHA256 } from '../../../src/common/digest.js';
import { Code, codeOf } from '../../../src/common/errors.js';
import { blobResourceName, parseReadResource, parseWriteResource, uploadResourceName } from '../../../src/reapi/resource-name.js';

const H = 'a'.repeat(64);

function invalid(fn: () => unknown, pattern: RegExp) {
  assert.throws(fn, (e: unknown) => {
    assert.equal(codeOf(e), Code.INVALID_ARGUMENT);
    assert.match((e as Error).message, pattern);
    return true;
  });
}

describe('ByteStream resource names', () => {
  it('parses read names with and without instance, function and compressor', () => {
    assert.deepEqual(parseReadResource(`blobs/${H}/12`), { instanceName: '', digest: { fn: SHA256, hash: H, sizeBytes: 12 }, compressor: 'identity' });
    const r = parseReadResource(`team/a/blobs/blake3/${H}/5`);
    assert.equal(r.instanceName, 'team/a');
    assert.equal(r.digest.fn, BLAKE3);
    const c = parseReadResource(`main/compressed-blobs/zstd/${H}/99`);
    assert.equal(c.compressor, 'zstd');
    assert.equal(c.digest.sizeBytes, 99);
  });

  it('parses write names, ignoring trailing metadata', () => {
    const w = parseWriteResource(`main/uploads/6f1c-uuid/blobs/${H}/42/some/metadata`);
    assert.equal(w.instanceName, 'main');
    assert.equal(w.uploadId, '6f1c-uuid');
    assert.equal(w.digest.sizeBytes, 42);
    assert.equal(parseWriteResource(`uploads/u/compressed-blobs/zstd/blake3/${H}/1`).digest.fn, BLAKE3);
  });

  it('round-trips the names it builds', () => {
    const d = { fn: BLAKE3, hash: H, sizeBytes: 7 };
    assert.deepEqual(parseReadResource(blobResourceName('x/y', d, 'zstd')), { instanceName: 'x/y', digest: d, compressor: 'zstd' });
    assert.equal(parseWriteResource(uploadResourceName('', 'id1', { ...d, fn: SHA256 })).uploadId, 'id1');
    assert.equal(blobResourceName('', { fn: SHA256, hash: H, sizeBytes: 1 }), `blobs/${H}/1`);
  });

  it('rejects malformed names with a message naming the problem', () => {
    invalid(() => parseReadResource('nothing/here'), /expected \{instance\}\/blobs/);
    invalid(() => parseReadResource(`blobs/${H}/-1`), /size "-1"/);
    invalid(() => parseReadResource(`blobs/${H}/1x`), /size "1x"/);
    invalid(() => parseReadResource(`blobs/${H.slice(1)}/1`), /63-digit hash/);
    invalid(() => parseReadResource(`blobs/${H.toUpperCase()}/1`), /lowercase hex/);
    invalid(() => parseReadResource(`blobs/sha1/${'b'.repeat(40)}/1`), /unsupported digest function "sha1"/);
    invalid(() => parseReadResource(`compressed-blobs/brotli/${H}/1`), /unsupported compressor "brotli"/);
    invalid(() => parseReadResource(`blobs/${H}/1/extra`), /trailing/);
    invalid(() => parseWriteResource(`blobs/${H}/1`), /uploads/);
    invalid(() => parseWriteResource(`uploads//blobs/${H}/1`), /upload id/);
    invalid(() => parseWriteResource(`uploads/u/${H}/1`), /"blobs" or "compressed-blobs"/);
  });
});
