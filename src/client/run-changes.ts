import { randomBytes } from 'node:crypto';
import { chmod, mkdir, rename, rm, symlink, utimes, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { type DigestFunction, fromWire } from '../common/digest.js';
import { Code, ReprError } from '../common/errors.js';
import { type Node, Node_Kind, type PathNode } from '../proto/repr/run/v1/run.js';
import { checkAbsolute, rootOf } from '../vfs/paths.js';
import { assertRealParent } from './file-source.js';
import type { ReapiClient } from '../reapi/reapi-client.js';
import { RemoteBlobStore } from '../storage/remote-store.js';

/** What applying a run's changes did. */
export interface Applied {
  /** Bytes of the files written. */
  bytes: number;
  /** Files whose setuid, setgid or sticky bits were not kept: those bits, and the mode written. */
  droppedModeBits: DroppedBits[];
}

export interface DroppedBits {
  path: string;
  bits: number;
  mode: number;
}

/** Mode bits a file written back never gets, with their names for the note that says so. */
const SPECIAL_BITS: [number, string][] = [
  [0o4000, 'setuid'],
  [0o2000, 'setgid'],
  [0o1000, 'sticky'],
];

/** One line saying which bits of a file were not written back, and the mode it has instead. */
export function droppedBitsNote(d: DroppedBits): string {
  const names = SPECIAL_BITS.filter(([b]) => d.bits & b).map(([, n]) => n);
  const these = `${names.join(' and ')} bit${names.length > 1 ? 's' : ''}`;
  return `${d.path}: ${these} not written back (a remote command cannot hand this machine such files); its mode is ${d.mode.toString(8).padStart(4, '0')}`;
}

/**
 * Applies what a run changed to the client's directories: removals first
 * (deepest first), then directories, then files and symlinks. Each file is
 * fetched from the CAS into a temporary name beside its target and renamed
 * over it, so an interrupted apply never leaves a half-written file. Paths
 * outside the run's roots are refused: the server cannot write anywhere else.
 */
export async function applyChanges(changes: readonly PathNode[], roots: readonly string[], cas: ReapiClient, fn: DigestFunction): Promise<Applied> {
  for (const c of changes) {
    checkAbsolute(c.path, 'changed path');
    if (!rootOf(c.path, roots) || roots.includes(c.path))
      throw new ReprError(Code.PERMISSION_DENIED, `the server reported a change outside the run's roots: ${c.path}`);
  }
  const kind = (c: PathNode) => c.node?.kind ?? Node_Kind.ABSENT;
  // Every step checks where the path really leads first: a run may leave a
  // symlink to elsewhere on the client, and a later change beneath it must
  // not write (or remove) through it.
  const removals = changes.filter((c) => kind(c) === Node_Kind.ABSENT).sort((a, b) => b.path.length - a.path.length);
  for (const c of removals) {
    await assertRealParent(c.path, roots);
    await rm(c.path, { recursive: true, force: true });
  }
  const dirs = changes.filter((c) => kind(c) === Node_Kind.DIRECTORY).sort((a, b) => a.path.length - b.path.length);
  for (const c of dirs) {
    await assertRealParent(c.path, roots);
    await rm(c.path, { force: true }).catch(() => undefined); // a file that became a directory
    await mkdir(c.path, { recursive: true });
  }
  const leaves = changes.filter((c) => c.node && (c.node.kind === Node_Kind.FILE || c.node.kind === Node_Kind.SYMLINK));
  // Fetched all at once, in few round trips (BatchReadBlobs for small blobs, ByteStream for large).
  const contents = await new RemoteBlobStore(cas).getMany(
    leaves.filter((c) => c.node!.kind === Node_Kind.FILE).map((c) => fromWire(fn, c.node!.digest, `digest of ${c.path}`)),
  );
  // Each lane sums its own files: `total += await ...` would read the total
  // before the await and overwrite what the other lanes added meanwhile.
  let next = 0;
  const lane = async () => {
    let sum = 0;
    while (next < leaves.length) {
      const n = await applyLeaf(leaves[next++]!, contents, fn, roots);
      sum += n;
    }
    return sum;
  };
  const sums = await Promise.all(Array.from({ length: Math.min(16, leaves.length) }, lane));
  const droppedModeBits = leaves.flatMap((c) => {
    const bits = c.node!.kind === Node_Kind.FILE ? c.node!.mode & 0o7000 : 0;
    return bits ? [{ path: c.path, bits, mode: writtenMode(c.node!) }] : [];
  });
  return { bytes: sums.reduce((a, b) => a + b, 0), droppedModeBits };
}

/**
 * The permission bits a file comes back with: those the command left (or
 * 0755/0644 by the executable bit, from a server that sends no mode), never
 * setuid, setgid or sticky. An executor may run commands as root, and a
 * setuid file it handed back would run as this user (or as root, for a
 * client running as root) whatever the command was.
 */
function writtenMode(n: Node): number {
  return n.mode ? n.mode & 0o777 : n.executable ? 0o755 : 0o644;
}

/** Writes one file or symlink under a temporary name beside it, then renames it into place. */
async function applyLeaf(c: PathNode, contents: Map<string, Buffer>, fn: DigestFunction, roots: readonly string[]): Promise<number> {
  const n = c.node!;
  await assertRealParent(c.path, roots);
  await mkdir(path.dirname(c.path), { recursive: true });
  await assertRealParent(c.path, roots);
  const tmp = path.join(path.dirname(c.path), `.repr-${randomBytes(6).toString('hex')}.tmp`);
  let bytes = 0;
  try {
    if (n.kind === Node_Kind.FILE) {
      const d = fromWire(fn, n.digest, `digest of ${c.path}`);
      const data = d.sizeBytes === 0 ? Buffer.alloc(0) : contents.get(d.hash);
      if (!data) throw new ReprError(Code.NOT_FOUND, `the content of ${c.path} (blob ${d.hash}) is not in the CAS`);
      const mode = writtenMode(n);
      await writeFile(tmp, data, { mode });
      // Exactly the bits the command set, as a local chmod would leave them
      // whatever this process's umask (which masks writeFile's mode).
      await chmod(tmp, mode);
      if (n.mtimeMs > 0) await utimes(tmp, new Date(), new Date(n.mtimeMs));
      bytes = data.length;
    } else {
      await symlink(n.symlinkTarget, tmp);
    }
    await rm(c.path, { recursive: true, force: true }).catch(() => undefined);
    await rename(tmp, c.path);
  } catch (e) {
    await rm(tmp, { force: true });
    throw e;
  }
  return bytes;
}
