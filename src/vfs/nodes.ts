import { type DigestFunction, fromWire } from '../common/digest.js';
import { invalidArgument } from '../common/errors.js';
import { type Node, Node_Kind, type PathNode } from '../proto/repr/run/v1/run.js';
import { MAX_NAME_BYTES, MAX_PATH_BYTES } from './paths.js';
import { fileMode, type NodeKind, type VNode, type VPathNode } from './vfs.js';

/**
 * The most entries one listing may carry. A directory that big is rare on a
 * disk; the bound keeps one answer from costing the worker unbounded memory.
 */
export const MAX_LISTING_ENTRIES = 1 << 20;
/** Dates JavaScript can represent (±100 million days from the epoch). */
const MAX_MTIME_MS = 8.64e15;

const KINDS: Record<Node_Kind, NodeKind | undefined> = {
  [Node_Kind.ABSENT]: 'absent',
  [Node_Kind.FILE]: 'file',
  [Node_Kind.DIRECTORY]: 'dir',
  [Node_Kind.SYMLINK]: 'symlink',
  [Node_Kind.UNRECOGNIZED]: undefined,
};

const WIRE_KINDS: Record<NodeKind, Node_Kind> = { absent: Node_Kind.ABSENT, file: Node_Kind.FILE, dir: Node_Kind.DIRECTORY, symlink: Node_Kind.SYMLINK };

const validName = (n: string) => n !== '' && n !== '.' && n !== '..' && !n.includes('/') && !n.includes('\0') && Buffer.byteLength(n) <= MAX_NAME_BYTES;

const clip = (s: string) => JSON.stringify(s.length > 100 ? `${s.slice(0, 100)}...` : s);

/**
 * A node from the wire, checked: the mount trusts what it is told, so a
 * malformed answer is refused here (a file's digest must parse in the run's
 * digest function; entry names must be single path components; sizes,
 * times, targets and listings stay within what a real file system holds).
 */
export function nodeFromWire(fn: DigestFunction, n: Node | undefined, where: string, depth = 0): VNode {
  if (!n) return { kind: 'absent' };
  const kind = KINDS[n.kind];
  if (!kind) throw invalidArgument(`${where}: unknown node kind ${n.kind}`);
  const v: VNode = { kind };
  if (n.mtimeMs) {
    if (!Number.isSafeInteger(n.mtimeMs) || Math.abs(n.mtimeMs) > MAX_MTIME_MS) throw invalidArgument(`${where}: mtime_ms ${n.mtimeMs} is not a date`);
    v.mtimeMs = n.mtimeMs;
  }
  if (kind === 'file') {
    if (n.digest) {
      const d = fromWire(fn, n.digest, `${where}.digest`);
      v.hash = d.hash;
      v.size = d.sizeBytes;
    } else {
      if (!Number.isSafeInteger(n.size) || n.size < 0) throw invalidArgument(`${where}: size ${n.size} is not a non-negative integer`);
      v.size = n.size;
    }
    if (n.executable) v.executable = true;
    if (n.mode) {
      if (n.mode > 0o7777) throw invalidArgument(`${where}: mode ${n.mode.toString(8)} is not a file's permission bits`);
      // The mount shows no setuid, setgid or sticky file: what the command
      // runs must not gain privileges from what a client says.
      v.mode = n.mode & 0o777;
    }
  } else if (kind === 'symlink') {
    if (!n.symlinkTarget) throw invalidArgument(`${where}: a symlink needs a target`);
    if (n.symlinkTarget.includes('\0') || Buffer.byteLength(n.symlinkTarget) > MAX_PATH_BYTES) {
      throw invalidArgument(`${where}: symlink target ${clip(n.symlinkTarget)} is not a path (NUL, or over ${MAX_PATH_BYTES} bytes)`);
    }
    v.target = n.symlinkTarget;
  } else if (kind === 'dir' && n.listed) {
    if (depth > 0) throw invalidArgument(`${where}: entries of a listing carry no listing of their own`);
    if (n.entries.length > MAX_LISTING_ENTRIES)
      throw invalidArgument(`${where}: a listing of ${n.entries.length} entries is over the limit of ${MAX_LISTING_ENTRIES}`);
    const seen = new Set<string>();
    v.entries = n.entries.map((e) => {
      if (!validName(e.name)) throw invalidArgument(`${where}: bad entry name ${clip(e.name)}`);
      if (seen.has(e.name)) throw invalidArgument(`${where}: entry ${clip(e.name)} listed twice`);
      seen.add(e.name);
      return { name: e.name, node: nodeFromWire(fn, e.node, `${where}/${e.name}`, depth + 1) };
    });
  }
  return v;
}

export function nodeToWire(v: VNode, fn?: DigestFunction): Node {
  return {
    kind: WIRE_KINDS[v.kind],
    digest: v.kind === 'file' && v.hash !== undefined && fn ? { hash: v.hash, sizeBytes: v.size ?? 0 } : undefined,
    size: v.size ?? 0,
    executable: v.kind === 'file' && (fileMode(v) & 0o111) !== 0,
    symlinkTarget: v.target ?? '',
    mtimeMs: Math.round(v.mtimeMs ?? 0),
    listed: v.entries !== undefined,
    entries: (v.entries ?? []).map((e) => ({ name: e.name, node: nodeToWire(e.node, fn) })),
    mode: v.kind === 'file' ? (v.mode ?? 0) : 0,
  };
}

export function pathNodesFromWire(fn: DigestFunction, list: readonly PathNode[], where: string): VPathNode[] {
  return list.map((p, i) => ({ path: p.path, node: nodeFromWire(fn, p.node, `${where}[${i}] ${p.path}`) }));
}
