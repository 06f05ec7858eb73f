/**
 * The virtual file tree of a `repr run`, as the worker and its FUSE helper
 * process see it. Paths are the client's absolute paths: the mount shows
 * `/home/u/proj/a.c` at `<mountpoint>/home/u/proj/a.c`, and the sandbox binds
 * each virtualized root back at its own path, so the command sees the
 * client's layout unchanged.
 */

export type NodeKind = 'absent' | 'file' | 'dir' | 'symlink';

/** What one path is on the client. `absent` is an answer too, and is cached. */
export interface VNode {
  kind: NodeKind;
  /** file: content hash (lower-case hex, in the run's digest function), when known. */
  hash?: string;
  /** file: length in bytes (known from a listing even before the hash is). */
  size?: number;
  /** file: the executable bit. */
  executable?: boolean;
  /**
   * file: permission bits (0o777) when the client sent them, else
   * `executable` says (see fileMode). A change the run made may carry
   * setuid, setgid and sticky too: the client decides what it keeps.
   */
  mode?: number;
  /** symlink: its target, as stored (not resolved). */
  target?: string;
  /** Modification time on the client, so that `make` compares the client's times. */
  mtimeMs?: number;
  /** dir: its complete listing, when known. Entries' nodes carry no entries of their own. */
  entries?: VEntry[];
}

export interface VEntry {
  name: string;
  node: VNode;
}

/** A file's permission bits: sent by the client, or (from an older client) 0755 or 0644 by its executable bit. */
export function fileMode(v: Pick<VNode, 'mode' | 'executable'>): number {
  return v.mode ?? (v.executable ? 0o755 : 0o644);
}

/** A node known for a path before the run starts (a mapping) or learned during it. */
export interface VPathNode {
  path: string;
  node: VNode;
}

/**
 * One path the run created, changed or removed under a virtualized root.
 * `absent` means removed. A file has either `hash` (unchanged content that
 * moved, or mode bits that changed) or `file` (new content written by
 * the run, on the host, in the scratch directory).
 */
export interface VChange {
  path: string;
  kind: NodeKind;
  hash?: string;
  size?: number;
  file?: string;
  /** file: the mode bits the command left (setuid, setgid and sticky included; the client decides what it keeps). */
  mode?: number;
  target?: string;
}

/** What the mount saw, for telemetry and for the client's record of what a command reads. */
export interface VAccessReport {
  /** Every path the run looked up, opened or listed (existing or not), in first-seen order. */
  accessed: string[];
  /** Directories whose listing the run read. */
  listed: string[];
  /** Lookups answered from a mapping sent with the request. */
  mappedHits: number;
  /** Questions sent to the client (lookups + listings + hash queries). */
  queries: number;
}
