import { createHash } from 'node:crypto';
import { Blake3Hasher } from '@napi-rs/blake-hash';
import { invalidArgument } from './errors.js';

/** Incremental hash over a blob's bytes. */
export interface Hasher {
  update(chunk: Buffer): void;
  /** Lowercase hex; the hasher must not be used afterwards. */
  digestHex(): string;
}

/**
 * A digest function repr supports. `value` is the REAPI DigestFunction.Value
 * number; `name` is its lowercase form, as used in ByteStream resource names.
 */
export interface DigestFunction {
  readonly name: 'sha256' | 'blake3';
  readonly value: number;
  readonly hexLength: number;
  /**
   * REAPI says resource names omit the function for the "legacy" functions
   * (SHA256 among them) and the server infers it from the hash length.
   */
  readonly omittedInResourceNames: boolean;
  newHasher(): Hasher;
}

export const SHA256: DigestFunction = {
  name: 'sha256',
  value: 1,
  hexLength: 64,
  omittedInResourceNames: true,
  newHasher() {
    const h = createHash('sha256');
    return { update: (c) => void h.update(c), digestHex: () => h.digest('hex') };
  },
};

export const BLAKE3: DigestFunction = {
  name: 'blake3',
  value: 9,
  hexLength: 64,
  omittedInResourceNames: false,
  newHasher() {
    const h = new Blake3Hasher();
    return { update: (c) => void h.update(c), digestHex: () => h.digest('hex') };
  },
};

export const DIGEST_FUNCTIONS: readonly DigestFunction[] = [SHA256, BLAKE3];

const byValue = new Map(DIGEST_FUNCTIONS.map((f) => [f.value, f]));
const byName = new Map(DIGEST_FUNCTIONS.map((f) => [f.name, f]));

/** REAPI DigestFunction.Value names, for error messages about unsupported ones. */
const KNOWN_VALUE_NAMES: Record<number, string> = {
  0: 'UNKNOWN',
  1: 'SHA256',
  2: 'SHA1',
  3: 'MD5',
  4: 'VSO',
  5: 'SHA384',
  6: 'SHA512',
  7: 'MURMUR3',
  8: 'SHA256TREE',
  9: 'BLAKE3',
};

/**
 * Resolves the digest function of a request. UNKNOWN (0) means the client
 * predates the field, which REAPI defines as SHA256 for a 64-hex-digit hash.
 */
export function digestFunctionFromValue(value: number | undefined): DigestFunction {
  if (value === undefined || value === 0) return SHA256;
  const fn = byValue.get(value);
  if (!fn) {
    const name = KNOWN_VALUE_NAMES[value] ?? `value ${value}`;
    throw invalidArgument(`unsupported digest function ${name}; this server supports ${DIGEST_FUNCTIONS.map((f) => f.name.toUpperCase()).join(', ')}`);
  }
  return fn;
}

export function digestFunctionFromName(name: string): DigestFunction | undefined {
  return byName.get(name as DigestFunction['name']);
}

/** A blob's identity: the function that produced the hash, the hash, and the size. */
export interface Digest {
  readonly fn: DigestFunction;
  readonly hash: string;
  readonly sizeBytes: number;
}

const HEX = /^[0-9a-f]+$/;

/**
 * Validates a wire digest (hash + size) under a digest function, so that
 * nothing downstream (file names, keys) ever sees a malformed hash.
 */
export function makeDigest(fn: DigestFunction, hash: string, sizeBytes: number | bigint | string): Digest {
  if (hash.length !== fn.hexLength || !HEX.test(hash)) {
    throw invalidArgument(`invalid ${fn.name} hash "${truncate(hash)}": expected ${fn.hexLength} lowercase hex digits`);
  }
  const size = typeof sizeBytes === 'number' ? sizeBytes : Number(sizeBytes);
  const text = typeof sizeBytes === 'number' ? int64Text(sizeBytes) : String(sizeBytes);
  if (size < 0) throw invalidArgument(`invalid size_bytes ${text} for digest ${hash}: it is negative`);
  if (!Number.isSafeInteger(size)) {
    throw invalidArgument(`invalid size_bytes ${text} for digest ${hash}: must be an integer below 2^53`);
  }
  return { fn, hash, sizeBytes: size };
}

/**
 * An int64 from the wire for a message. Values past 2^53 arrive as the
 * nearest double, whose digits would be misleading, so only their range is said.
 */
export function int64Text(n: number): string {
  if (Number.isSafeInteger(n)) return String(n);
  return n > 0 ? '>= 2^53' : '<= -2^53';
}

/**
 * Refuses a blob larger than the CAS accepts. REAPI has servers answer
 * INVALID_ARGUMENT for blobs over the max_cas_blob_size_bytes they advertise.
 */
export function checkBlobSize(d: Digest, maxBytes: number): void {
  if (d.sizeBytes > maxBytes) {
    throw invalidArgument(`blob ${digestString(d)} is ${d.sizeBytes} bytes, more than this server's max_cas_blob_size_bytes (${maxBytes})`);
  }
}

/** Wire digest → Digest, with the field name used in error messages. */
export function fromWire(fn: DigestFunction, d: { hash: string; sizeBytes: number } | undefined, field = 'digest'): Digest {
  if (!d) throw invalidArgument(`${field} is missing`);
  try {
    return makeDigest(fn, d.hash, d.sizeBytes);
  } catch (e) {
    throw (e as import('./errors.js').ReprError).wrap(field);
  }
}

export function toWire(d: Digest): { hash: string; sizeBytes: number } {
  return { hash: d.hash, sizeBytes: d.sizeBytes };
}

/** A stable string key for maps and file names. */
export function digestKey(d: Digest): string {
  return `${d.fn.name}/${d.hash}/${d.sizeBytes}`;
}

export function digestString(d: Digest): string {
  return `${d.hash}/${d.sizeBytes}`;
}

export function computeDigest(fn: DigestFunction, data: Buffer): Digest {
  const h = fn.newHasher();
  h.update(data);
  return { fn, hash: h.digestHex(), sizeBytes: data.length };
}

export function emptyDigest(fn: DigestFunction): Digest {
  return computeDigest(fn, Buffer.alloc(0));
}

export function isEmptyDigest(d: Digest): boolean {
  return d.sizeBytes === 0 && d.hash === emptyHashes.get(d.fn.name);
}

const emptyHashes = new Map(DIGEST_FUNCTIONS.map((f) => [f.name, computeDigest(f, Buffer.alloc(0)).hash]));

function truncate(s: string): string {
  return s.length > 80 ? `${s.slice(0, 80)}…` : s;
}
