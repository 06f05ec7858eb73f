import { type Digest, type DigestFunction, digestFunctionFromName, makeDigest, SHA256 } from '../common/digest.js';
import { invalidArgument, ReprError } from '../common/errors.js';

/** Compressors repr accepts in `compressed-blobs/{compressor}/...` names. */
export type Compressor = 'identity' | 'zstd';

export interface BlobResource {
  instanceName: string;
  digest: Digest;
  /** 'identity' for plain `blobs/` names. */
  compressor: Compressor;
}

export interface UploadResource extends BlobResource {
  /** Identifies one upload, so an interrupted one can be resumed. */
  uploadId: string;
}

// Path segments REAPI reserves; an instance name never contains them, which
// is what makes the instance/rest split unambiguous.
const KEYWORDS = new Set(['blobs', 'uploads', 'actions', 'actionResults', 'operations', 'capabilities', 'compressed-blobs']);

// Lowercase DigestFunction.Value names, to tell a function segment from a hash.
const FUNCTION_NAMES = new Set(['sha256', 'sha1', 'md5', 'vso', 'sha384', 'sha512', 'murmur3', 'sha256tree', 'blake3']);

const SUPPORTED_COMPRESSORS: ReadonlySet<string> = new Set<Compressor>(['zstd']);

/** `{instance}/blobs/{fn/}{hash}/{size}` or `{instance}/compressed-blobs/{compressor}/{fn/}{hash}/{size}`. */
export function parseReadResource(name: string): BlobResource {
  try {
    const segs = name.split('/');
    const i = segs.findIndex((s) => KEYWORDS.has(s));
    if (i < 0 || (segs[i] !== 'blobs' && segs[i] !== 'compressed-blobs'))
      throw invalidArgument('expected {instance}/blobs/... or {instance}/compressed-blobs/...');
    const { digest, compressor, rest } = parseBlobPart(segs, i);
    if (rest.length > 0) throw invalidArgument(`unexpected trailing segments "${rest.join('/')}"`);
    return { instanceName: segs.slice(0, i).join('/'), digest, compressor };
  } catch (e) {
    throw describe(e, 'read', name);
  }
}

/** `{instance}/uploads/{uuid}/blobs/{fn/}{hash}/{size}{/metadata}` or the compressed-blobs form. */
export function parseWriteResource(name: string): UploadResource {
  try {
    const segs = name.split('/');
    const i = segs.findIndex((s) => KEYWORDS.has(s));
    if (i < 0 || segs[i] !== 'uploads') throw invalidArgument('expected {instance}/uploads/{uuid}/blobs/...');
    const uploadId = segs[i + 1];
    if (!uploadId) throw invalidArgument('missing upload id after "uploads/"');
    const kind = segs[i + 2];
    if (kind !== 'blobs' && kind !== 'compressed-blobs') throw invalidArgument('expected "blobs" or "compressed-blobs" after the upload id');
    // Anything after the size is optional metadata, which REAPI lets servers ignore.
    const { digest, compressor } = parseBlobPart(segs, i + 2);
    return { instanceName: segs.slice(0, i).join('/'), uploadId, digest, compressor };
  } catch (e) {
    throw describe(e, 'write', name);
  }
}

function parseBlobPart(segs: string[], at: number): { digest: Digest; compressor: Compressor; rest: string[] } {
  let j = at + 1;
  let compressor: Compressor = 'identity';
  if (segs[at] === 'compressed-blobs') {
    const c = segs[j++] ?? '';
    if (!SUPPORTED_COMPRESSORS.has(c)) throw invalidArgument(`unsupported compressor "${c}" (supported: ${[...SUPPORTED_COMPRESSORS].join(', ')})`);
    compressor = c as Compressor;
  }
  let fn: DigestFunction = SHA256;
  const maybeFn = segs[j] ?? '';
  if (FUNCTION_NAMES.has(maybeFn)) {
    const f = digestFunctionFromName(maybeFn);
    if (!f) throw invalidArgument(`unsupported digest function "${maybeFn}" (supported: sha256, blake3)`);
    fn = f;
    j++;
  }
  const hash = segs[j] ?? '';
  const size = segs[j + 1] ?? '';
  if (!/^\d+$/.test(size)) throw invalidArgument(`size "${size}" is not a non-negative integer`);
  if (fn === SHA256 && hash.length !== SHA256.hexLength) {
    throw invalidArgument(`cannot infer a supported digest function from a ${hash.length}-digit hash (SHA256 has 64)`);
  }
  return { digest: makeDigest(fn, hash, size), compressor, rest: segs.slice(j + 2) };
}

function describe(e: unknown, kind: string, name: string): ReprError {
  const err = e instanceof ReprError ? e : invalidArgument(String(e));
  return invalidArgument(`invalid ${kind} resource name "${name}": ${err.message}`);
}

export function blobResourceName(instanceName: string, d: Digest, compressor: Compressor = 'identity'): string {
  const fn = d.fn.omittedInResourceNames ? '' : `${d.fn.name}/`;
  const kind = compressor === 'identity' ? 'blobs' : `compressed-blobs/${compressor}`;
  return `${instanceName ? `${instanceName}/` : ''}${kind}/${fn}${d.hash}/${d.sizeBytes}`;
}

export function uploadResourceName(instanceName: string, uploadId: string, d: Digest, compressor: Compressor = 'identity'): string {
  const blob = blobResourceName('', d, compressor);
  return `${instanceName ? `${instanceName}/` : ''}uploads/${uploadId}/${blob}`;
}
