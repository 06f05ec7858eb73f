import type { Stats } from 'node:fs';
import { constants } from 'node:fs';
import { lstat, open, readdir, readlink } from 'node:fs/promises';
import path from 'node:path';
import { type Digest, type DigestFunction, toWire } from '../common/digest.js';
import { failedPrecondition } from '../common/errors.js';
import { HASH_CHUNK } from '../common/hash-file.js';
import type { BlobStore } from '../storage/blob-store.js';
import {
  type Command,
  Directory,
  type OutputDirectory,
  type OutputFile,
  type OutputSymlink,
  Tree,
} from '../proto/build/bazel/remote/execution/v2/remote_execution.js';
import { resolveInRoot } from './root-paths.js';
import { assertRelativePath } from '../reapi/paths.js';

export interface CollectedOutputs {
  outputFiles: OutputFile[];
  outputDirectories: OutputDirectory[];
  outputFileSymlinks: OutputSymlink[];
  outputDirectorySymlinks: OutputSymlink[];
  outputSymlinks: OutputSymlink[];
  bytesUploaded: number;
}

/**
 * Stores a file in the CAS unless it is there already; returns its digest.
 * The file is opened once, without following a symlink in its last component
 * (O_NOFOLLOW) and refused unless it is a regular file, so that a name in an
 * action's directory can never make the privileged side read something else
 * (a FIFO would also block forever).
 */
export async function uploadFile(cas: BlobStore, fn: DigestFunction, file: string): Promise<{ digest: Digest; uploaded: number }> {
  const fh = await open(file, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  try {
    if (!(await fh.stat()).isFile()) throw failedPrecondition(`${path.basename(file)} is not a regular file`);
    const read = () => fh.createReadStream({ start: 0, highWaterMark: HASH_CHUNK, autoClose: false });
    const h = fn.newHasher();
    let size = 0;
    for await (const c of read()) {
      h.update(c as Buffer);
      size += (c as Buffer).length;
    }
    const digest: Digest = { fn, hash: h.digestHex(), sizeBytes: size };
    if ((await cas.findMissing([digest])).length === 0) return { digest, uploaded: 0 };
    const w = cas.beginWrite(digest);
    try {
      for await (const c of read()) await w.write(c as Buffer);
      await w.commit();
    } catch (e) {
      await w.abort();
      throw e;
    }
    return { digest, uploaded: digest.sizeBytes };
  } finally {
    await fh.close();
  }
}

async function putMessage(cas: BlobStore, fn: DigestFunction, bytes: Uint8Array): Promise<Digest> {
  const data = Buffer.from(bytes);
  const h = fn.newHasher();
  h.update(data);
  const digest = { fn, hash: h.digestHex(), sizeBytes: data.length };
  await cas.put(digest, data);
  return digest;
}

/**
 * Finds the outputs a Command declared under the working directory, uploads
 * them and describes them for the ActionResult. `output_paths` (v2.1) is used
 * when present, else the older `output_files` / `output_directories`.
 */
export async function collectOutputs(cas: BlobStore, fn: DigestFunction, cmd: Command, root: string, workingDirectory: string): Promise<CollectedOutputs> {
  const res: CollectedOutputs = {
    outputFiles: [],
    outputDirectories: [],
    outputFileSymlinks: [],
    outputDirectorySymlinks: [],
    outputSymlinks: [],
    bytesUploaded: 0,
  };
  const useNew = cmd.outputPaths.length > 0;
  const wanted: { p: string; kind: 'file' | 'dir' | 'any' }[] = useNew
    ? cmd.outputPaths.map((p) => ({ p, kind: 'any' as const }))
    : [...cmd.outputFiles.map((p) => ({ p, kind: 'file' as const })), ...cmd.outputDirectories.map((p) => ({ p, kind: 'dir' as const }))];

  for (const { p, kind } of wanted) {
    const rel = assertRelativePath(p, 'output path');
    // Every parent is resolved inside the root; the output itself is not
    // followed, so a symlink is reported as one and never read through.
    const at = await resolveInRoot(root, path.posix.join(workingDirectory, rel), { followLast: false });
    if (at.kind !== 'inside') continue; // not produced, or only reachable outside the root: absent
    const abs = at.host;
    let st: Stats;
    try {
      st = await lstat(abs);
    } catch {
      continue;
    }
    if (st.isSymbolicLink()) {
      const link = { path: p, target: await readlink(abs), nodeProperties: undefined };
      if (useNew) res.outputSymlinks.push(link);
      else if (kind === 'dir') res.outputDirectorySymlinks.push(link);
      else res.outputFileSymlinks.push(link);
    } else if (st.isFile() && kind !== 'dir') {
      const { digest, uploaded } = await uploadFile(cas, fn, abs);
      res.bytesUploaded += uploaded;
      res.outputFiles.push({ path: p, digest: toWire(digest), isExecutable: (st.mode & 0o111) !== 0, contents: Buffer.alloc(0), nodeProperties: undefined });
    } else if (st.isDirectory() && kind !== 'file') {
      const tree = await buildTree(cas, fn, abs, res);
      const treeDigest = await putMessage(cas, fn, Tree.encode(tree).finish());
      res.outputDirectories.push({ path: p, treeDigest: toWire(treeDigest), isTopologicallySorted: false, rootDirectoryDigest: undefined });
    }
  }
  return res;
}

/** A Tree of a directory on disk: canonical (sorted) Directory messages, children deduplicated. */
async function buildTree(cas: BlobStore, fn: DigestFunction, dir: string, acc: CollectedOutputs): Promise<Tree> {
  const children = new Map<string, Directory>();
  const walk = async (d: string): Promise<{ dir: Directory; digest: Digest }> => {
    const entries = (await readdir(d, { withFileTypes: true })).sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    const out = Directory.fromPartial({});
    for (const e of entries) {
      const p = path.join(d, e.name);
      if (e.isSymbolicLink()) out.symlinks.push({ name: e.name, target: await readlink(p), nodeProperties: undefined });
      else if (e.isFile()) {
        const st = await lstat(p);
        const { digest, uploaded } = await uploadFile(cas, fn, p);
        acc.bytesUploaded += uploaded;
        out.files.push({ name: e.name, digest: toWire(digest), isExecutable: (st.mode & 0o111) !== 0, nodeProperties: undefined });
      } else if (e.isDirectory()) {
        const sub = await walk(p);
        out.directories.push({ name: e.name, digest: toWire(sub.digest) });
        children.set(sub.digest.hash, sub.dir);
      }
    }
    const digest = await putMessage(cas, fn, Directory.encode(out).finish());
    return { dir: out, digest };
  };
  const root = await walk(dir);
  return { root: root.dir, children: [...children.values()] };
}
