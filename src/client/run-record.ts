import { createHash } from 'node:crypto';
import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { PathNode } from '../proto/repr/run/v1/run.js';
import { nodeToWire } from '../vfs/nodes.js';
import type { DigestFunction } from '../common/digest.js';
import type { FileSource } from './file-source.js';

/** What one command read last time: the paths become mappings for the next run. */
export interface RunRecord {
  argv: string[];
  cwd: string;
  accessed: string[];
  listed: string[];
}

/** Where records live: $REPR_RUN_RECORDS, else the user's cache directory. */
export function recordDir(): string {
  return process.env.REPR_RUN_RECORDS || path.join(process.env.XDG_CACHE_HOME || path.join(os.homedir(), '.cache'), 'repr', 'runs');
}

function recordFile(dir: string, argv: readonly string[], cwd: string, roots: readonly string[]): string {
  const key = createHash('sha256').update(JSON.stringify({ argv, cwd, roots })).digest('hex');
  return path.join(dir, `${key}.json`);
}

export async function loadRecord(dir: string, argv: readonly string[], cwd: string, roots: readonly string[]): Promise<RunRecord | undefined> {
  try {
    return JSON.parse(await readFile(recordFile(dir, argv, cwd, roots), 'utf8')) as RunRecord;
  } catch {
    return undefined;
  }
}

export async function saveRecord(dir: string, roots: readonly string[], r: RunRecord): Promise<void> {
  await mkdir(dir, { recursive: true });
  const file = recordFile(dir, r.argv, r.cwd, roots);
  const tmp = `${file}.${process.pid}.tmp`;
  await writeFile(tmp, JSON.stringify(r));
  await rename(tmp, file);
}

/**
 * Mappings for a run from the paths a record says it touched, as they are
 * now on disk: files are hashed (cheaply if unchanged) and put in the CAS,
 * missing paths become "absent" answers, listed directories carry their
 * listing. An unchanged tree thus needs no question at all.
 */
export async function mappingsFor(paths: readonly string[], listed: readonly string[], files: FileSource, fn: DigestFunction): Promise<PathNode[]> {
  const isListed = new Set(listed);
  const all = [...new Set([...paths, ...listed])];
  const out: PathNode[] = [];
  // Bounded concurrency: thousands of lstat+hash at once only thrash.
  let next = 0;
  const worker = async () => {
    while (next < all.length) {
      const p = all[next++]!;
      try {
        out.push({ path: p, node: nodeToWire(await files.node(p, isListed.has(p)), fn) });
      } catch {
        /* unreadable now: leave it to an on-demand question */
      }
    }
  };
  await Promise.all(Array.from({ length: 16 }, worker));
  return out;
}
