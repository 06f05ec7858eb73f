import { createHash } from 'node:crypto';
import { type Digest, type DigestFunction, digestString, fromWire } from '../common/digest.js';
import { Code, codeOf, invalidArgument, notFound } from '../common/errors.js';
import { ActionResult, Tree } from '../proto/build/bazel/remote/execution/v2/remote_execution.js';
import type { BlobStore } from './blob-store.js';

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
function referencedDigests(fn: DigestFunction, r: ActionResult): { all: Digest[]; trees: Digest[] } {
  const all: Digest[] = [];
  const trees: Digest[] = [];
  for (const f of r.outputFiles) all.push(fromWire(fn, f.digest, `output file "${f.path}"`));
  for (const d of r.outputDirectories) {
    const t = fromWire(fn, d.treeDigest, `output directory "${d.path}"`);
    all.push(t);
    trees.push(t);
  }
  if (r.stdoutDigest) all.push(fromWire(fn, r.stdoutDigest, 'stdout_digest'));
  if (r.stderrDigest) all.push(fromWire(fn, r.stderrDigest, 'stderr_digest'));
  return { all, trees };
}

/**
 * The action cache over its two stores: results live in `ac` under acKey, the
 * blobs they point at in `cas`. A result is served only while everything it
 * references is still in the CAS: a hit whose outputs were evicted would make
 * the client fail later, where a miss just makes it execute the action again.
 */
export class ActionCache {
  constructor(
    private readonly ac: BlobStore,
    private readonly cas: BlobStore,
  ) {}

  /** The result stored for an action. Throws NOT_FOUND, saying why, when there is none to serve. */
  async get(instanceName: string, action: Digest): Promise<ActionResult> {
    let result: ActionResult;
    try {
      result = ActionResult.decode(await this.ac.get(acKey(instanceName, action)));
    } catch (e) {
      if (codeOf(e) === Code.NOT_FOUND) throw notFound(`no action result for action ${digestString(action)}`);
      throw e;
    }
    const missing = await this.missingBlobs(action.fn, result);
    if (missing.length > 0) {
      throw notFound(`action result for ${digestString(action)} refers to ${missing.length} blob(s) no longer in the CAS (e.g. ${digestString(missing[0]!)})`);
    }
    return result;
  }

  /** Like get, but a miss is undefined. */
  async find(instanceName: string, action: Digest): Promise<ActionResult | undefined> {
    try {
      return await this.get(instanceName, action);
    } catch (e) {
      if (codeOf(e) === Code.NOT_FOUND) return undefined;
      throw e;
    }
  }

  /** Stores a result; INVALID_ARGUMENT if any digest in it is malformed, since such an entry would break every later hit. */
  async put(instanceName: string, action: Digest, result: ActionResult): Promise<void> {
    referencedDigests(action.fn, result);
    await this.ac.put(acKey(instanceName, action), Buffer.from(ActionResult.encode(result).finish()));
  }

  /** Every blob the result references (output trees included) that the CAS lacks. */
  private async missingBlobs(fn: DigestFunction, result: ActionResult): Promise<Digest[]> {
    const direct = referencedDigests(fn, result);
    const missing = await this.cas.findMissing(direct.all);
    if (missing.length > 0) return missing;
    const inTrees: Digest[] = [];
    for (const t of direct.trees) {
      let tree: Tree;
      try {
        tree = Tree.decode(await this.cas.get(t));
      } catch (e) {
        if (codeOf(e) === Code.NOT_FOUND) return [t];
        throw invalidArgument(`output tree ${digestString(t)} is not a Tree message`);
      }
      for (const dir of [tree.root, ...tree.children]) {
        for (const f of dir?.files ?? []) inTrees.push(fromWire(fn, f.digest, `file "${f.name}" in tree ${digestString(t)}`));
      }
    }
    return inTrees.length > 0 ? this.cas.findMissing(inTrees) : [];
  }
}
