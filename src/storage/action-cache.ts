import { createHash } from 'node:crypto';
import { type Digest, type DigestFunction, fromWire } from '../common/digest.js';
import type { ActionResult } from '../proto/build/bazel/remote/execution/v2/remote_execution.js';

/**
 * Version of the key encoding below. Stores written with another version are
 * cleared at start-up (see ac-key-format.ts): the earlier encoding stored
 * instance "" under the client's own digest, so any old entry may have been
 * planted by a client of "" under a digest that some instance's key maps to.
 */
export const AC_KEY_FORMAT = 2;

const AC_KEY_DOMAIN = 'repr action cache key';

/**
 * The store key of an action's result. Every instance, "" included, goes
 * through the same hash, so no client can choose a raw key: a client of one
 * instance naming any digest lands on a key only that instance (and that
 * digest) maps to. Fields are length-prefixed so no two (instance, digest)
 * pairs share an encoding, and the domain string keeps these preimages apart
 * from anything else repr hashes.
 */
export function acKey(instanceName: string, action: Digest): Digest {
  const h = createHash('sha256');
  for (const field of [AC_KEY_DOMAIN, String(AC_KEY_FORMAT), instanceName, action.fn.name, action.hash, String(action.sizeBytes)]) {
    const bytes = Buffer.from(field, 'utf8');
    const len = Buffer.alloc(4);
    len.writeUInt32BE(bytes.length);
    h.update(len).update(bytes);
  }
  return { fn: action.fn, hash: h.digest('hex'), sizeBytes: action.sizeBytes };
}

/** Digests an ActionResult points at, validated; output trees listed apart. */
export function referencedDigests(fn: DigestFunction, r: ActionResult): { all: Digest[]; trees: Digest[] } {
  const all: Digest[] = [];
  const trees: Digest[] = [];
  r.outputFiles.forEach((f) => all.push(fromWire(fn, f.digest, `output file "${f.path}"`)));
  r.outputDirectories.forEach((d) => {
    const t = fromWire(fn, d.treeDigest, `output directory "${d.path}"`);
    all.push(t);
    trees.push(t);
  });
  if (r.stdoutDigest) all.push(fromWire(fn, r.stdoutDigest, 'stdout_digest'));
  if (r.stderrDigest) all.push(fromWire(fn, r.stderrDigest, 'stderr_digest'));
  return { all, trees };
}
