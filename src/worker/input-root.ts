import { chmod, copyFile, link, mkdir, rename, symlink, writeFile } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { type Digest, type DigestFunction, digestString, fromWire, isEmptyDigest } from '../common/digest.js';
import { Code, codeOf, failedPrecondition, invalidArgument } from '../common/errors.js';
import type { BlobStore } from '../storage/blob-store.js';
import { Directory } from '../proto/build/bazel/remote/execution/v2/remote_execution.js';
import { missingBlobsError } from '../reapi/precondition.js';

export interface StagingStats {
  files: number;
  directories: number;
  bytes: number;
  /** Files that had to be copied because no local file could be linked. */
  copied: number;
}

/**
 * Bounds on an input root, counted on its Merkle tree before anything is
 * written: a tree whose Directory messages refer to the same child many times
 * is tiny in the CAS but expands exponentially on disk (18 messages make 2^17
 * directories), so the expanded size is what is bounded.
 */
export interface InputLimits {
  /** Files, directories and symlinks of the expanded tree. */
  maxNodes: number;
  /** Sum of the sizes of the expanded tree's files. */
  maxBytes: number;
  /** Directory nesting. */
  maxDepth: number;
}

export const DEFAULT_INPUT_LIMITS: InputLimits = { maxNodes: 1_000_000, maxBytes: 64 * 1024 ** 3, maxDepth: 512 };

/**
 * Builds an action's input root on local disk from its Merkle tree. Files
 * are hard links to the CAS's own files (no copying); executables link to a
 * read-only-and-executable copy kept once per blob, because a hard link shares
 * its mode with every other link. Directories are world-writable so that the
 * unprivileged sandbox user can create outputs; the linked files stay owned by
 * root and read-only to it.
 */
export class InputRootBuilder {
  constructor(
    private readonly cas: BlobStore,
    /** Where executable copies and fallback copies of blobs are kept. */
    private readonly cacheDir: string,
    private readonly limits: InputLimits = DEFAULT_INPUT_LIMITS,
  ) {}

  /** `signal` stops staging part-way (the action's timeout covers staging); the caller removes `dest`. */
  async build(fn: DigestFunction, root: Digest, dest: string, signal?: AbortSignal): Promise<StagingStats> {
    const stats: StagingStats = { files: 0, directories: 0, bytes: 0, copied: 0 };
    const dirs = await this.fetchTree(fn, root, signal);
    this.measure(fn, root, dirs);
    const make = async (digest: Digest, at: string): Promise<void> => {
      signal?.throwIfAborted();
      const dir = dirs.get(digest.hash)!;
      await mkdir(at, { recursive: true });
      await chmod(at, 0o777);
      stats.directories++;
      const seen = new Set<string>();
      const name = (n: string) => {
        if (!n || n === '.' || n === '..' || n.includes('/') || n.includes('\0'))
          throw invalidArgument(`invalid name "${n}" in input directory ${digestString(digest)}`);
        if (seen.has(n)) throw invalidArgument(`duplicate name "${n}" in input directory ${digestString(digest)}`);
        seen.add(n);
        return path.join(at, n);
      };
      await Promise.all(
        dir.files.map(async (f) => {
          const d = fromWire(fn, f.digest, `file "${f.name}"`);
          await this.placeFile(d, name(f.name), f.isExecutable, stats);
        }),
      );
      for (const s of dir.symlinks) await symlink(s.target, name(s.name));
      await Promise.all(dir.directories.map((c) => make(fromWire(fn, c.digest, `directory "${c.name}"`), name(c.name))));
    };
    await make(root, dest);
    return stats;
  }

  /**
   * Counts the expanded tree (each distinct Directory once, memoized) and
   * refuses it over the limits before a single directory is made.
   */
  private measure(fn: DigestFunction, root: Digest, dirs: Map<string, Directory>): void {
    const { maxNodes, maxBytes, maxDepth } = this.limits;
    const sizes = new Map<string, { nodes: number; bytes: number }>();
    const visit = (d: Digest, depth: number): { nodes: number; bytes: number } => {
      const known = sizes.get(d.hash);
      if (known) return known;
      if (depth > maxDepth) throw failedPrecondition(`input root is nested deeper than this server's limit of ${maxDepth} directories (maxInputDepth)`);
      const dir = dirs.get(d.hash)!;
      let nodes = 1 + dir.files.length + dir.symlinks.length;
      let bytes = 0;
      for (const f of dir.files) bytes += f.digest?.sizeBytes ?? 0;
      for (const c of dir.directories) {
        const sub = visit(fromWire(fn, c.digest, `directory "${c.name}"`), depth + 1);
        nodes += sub.nodes;
        bytes += sub.bytes;
        // Checked as the sums grow, so that they stay small numbers however deep the sharing goes.
        if (nodes > maxNodes)
          throw failedPrecondition(`input root expands to more than ${maxNodes} files, directories and symlinks, this server's limit (maxInputNodes)`);
        if (bytes > maxBytes) throw failedPrecondition(`input root expands to more than ${maxBytes} bytes of files, this server's limit (maxInputBytes)`);
      }
      if (nodes > maxNodes)
        throw failedPrecondition(`input root expands to more than ${maxNodes} files, directories and symlinks, this server's limit (maxInputNodes)`);
      if (bytes > maxBytes) throw failedPrecondition(`input root expands to more than ${maxBytes} bytes of files, this server's limit (maxInputBytes)`);
      const m = { nodes, bytes };
      sizes.set(d.hash, m);
      return m;
    };
    visit(root, 0);
  }

  /** Fetches every Directory of the tree, a level at a time. */
  private async fetchTree(fn: DigestFunction, root: Digest, signal?: AbortSignal): Promise<Map<string, Directory>> {
    const dirs = new Map<string, Directory>();
    let level = [root];
    while (level.length > 0) {
      signal?.throwIfAborted();
      if (dirs.size + level.length > this.limits.maxNodes) {
        throw failedPrecondition(`input root has more than ${this.limits.maxNodes} distinct directories, this server's limit (maxInputNodes)`);
      }
      const missing = await this.cas.findMissing(level);
      if (missing.length > 0) throw missingBlobsError(missing);
      const decoded = await Promise.all(level.map(async (d) => decodeDirectory(d, await this.cas.get(d))));
      const next = new Map<string, Digest>();
      decoded.forEach((dir, i) => {
        dirs.set(level[i]!.hash, dir);
        for (const c of dir.directories) {
          const cd = fromWire(fn, c.digest, `directory "${c.name}"`);
          if (!dirs.has(cd.hash)) next.set(cd.hash, cd);
        }
      });
      level = [...next.values()];
    }
    // Files: one FindMissing for the whole tree, so a missing input fails fast and names them all.
    const files: Digest[] = [];
    for (const dir of dirs.values()) for (const f of dir.files) files.push(fromWire(fn, f.digest, `file "${f.name}"`));
    const missingFiles = files.length > 0 ? await this.cas.findMissing(files) : [];
    if (missingFiles.length > 0) throw missingBlobsError(missingFiles);
    if (files.length > 0) await this.cas.localize?.(files);
    return dirs;
  }

  private async placeFile(d: Digest, dest: string, executable: boolean, stats: StagingStats): Promise<void> {
    stats.files++;
    stats.bytes += d.sizeBytes;
    if (isEmptyDigest(d)) {
      await writeFile(dest, '', { mode: executable ? 0o555 : 0o444 });
      return;
    }
    const source = executable ? await this.executableCopy(d, stats) : this.cas.localPath?.(d);
    if (source) {
      try {
        await link(source, dest);
        return;
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e; // evicted meanwhile: copy below
      }
    }
    stats.copied++;
    await this.copyFromCas(d, dest, executable ? 0o555 : 0o444);
  }

  private async executableCopy(d: Digest, stats: StagingStats): Promise<string> {
    const p = path.join(this.cacheDir, 'x', `${d.fn.name}-${d.hash}-${d.sizeBytes}`);
    try {
      await chmod(p, 0o555);
      return p;
    } catch {
      /* not made yet */
    }
    await mkdir(path.dirname(p), { recursive: true });
    stats.copied++;
    await this.copyFromCas(d, p, 0o555);
    return p;
  }

  /** Writes a blob to `dest` atomically (tmp + rename), from a local file if there is one. */
  private async copyFromCas(d: Digest, dest: string, mode: number): Promise<void> {
    const tmp = `${dest}.tmp-${randomBytes(6).toString('hex')}`;
    const local = this.cas.localPath?.(d);
    try {
      if (local) await copyFile(local, tmp);
      else await writeFile(tmp, await this.cas.get(d));
    } catch (e) {
      if (codeOf(e) === Code.NOT_FOUND || (e as NodeJS.ErrnoException).code === 'ENOENT') throw missingBlobsError([d]);
      throw e;
    }
    await chmod(tmp, mode);
    await rename(tmp, dest);
  }
}

function decodeDirectory(d: Digest, bytes: Uint8Array): Directory {
  try {
    return Directory.decode(bytes);
  } catch (e) {
    throw failedPrecondition(`input directory ${digestString(d)} is not a Directory message: ${(e as Error).message}`);
  }
}
