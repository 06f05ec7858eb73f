import type { Logger } from '../common/logger.js';
import type { VAccessReport, VChange, VNode, VPathNode } from './vfs.js';

// What FuseMount (in the server or worker) and its helper process (which
// serves the mount, so that nothing in the parent can deadlock on it) say to
// each other over the IPC channel. Types only.

export interface FuseMountOptions {
  /** An existing empty directory. */
  mountpoint: string;
  /** Existing directory for new/changed file contents (copy-up files). */
  scratchDir: string;
  /** Absolute directories virtualized from the client; everything else but their ancestors is ENOENT. */
  roots: string[];
  /** Nodes known before start; lookups they cover cost no query. */
  mappings: VPathNode[];
  /** Owner reported for every node (the sandbox user), so the sandboxed command may write under the roots. */
  uid: number;
  gid: number;
  /** Asks the client what `path` is; with list=true and a dir, `entries` holds the full listing. A rejection fails the FUSE op with EIO. */
  query(path: string, list: boolean): Promise<VNode>;
  /** A host path (outside the mount) holding that content; never written to. */
  fetch(hash: string, size: number): Promise<string>;
  log?: Logger;
}

/** What a mount is before it serves a run: where it is and whom its nodes belong to. */
export type FusePrepareOptions = Pick<FuseMountOptions, 'mountpoint' | 'scratchDir' | 'uid' | 'gid' | 'log'>;

/** What a prepared mount learns when a run takes it: the run's tree and how to ask the run's client. */
export type FuseRunOptions = Pick<FuseMountOptions, 'roots' | 'mappings' | 'query' | 'fetch'>;

/** First message from the parent: where to mount. */
export type HelperInit = { t: 'init' } & Omit<FusePrepareOptions, 'log'>;

/** Second: the run's tree. Until it arrives every FUSE op waits, so nothing is answered (or cached) but from this tree. */
export type HelperConfigure = { t: 'configure' } & Omit<FuseRunOptions, 'query' | 'fetch'>;

export type ToHelper =
  | HelperInit
  | HelperConfigure
  /** A mount over this one (the run's overlay): if the helper ends unasked (its parent died), it goes first. */
  | { t: 'stacked'; path: string }
  /** The answer to a `query` (value: VNode) or `fetch` (value: host path). */
  | { t: 'answer'; id: number; ok: true; value: VNode | string }
  | { t: 'answer'; id: number; ok: false; error: string }
  | { t: 'call'; id: number; op: 'changes' | 'report' }
  /** Unmount and exit. */
  | { t: 'close' };

export type FromHelper =
  | { t: 'mounted' }
  /** Unmounted as asked; the process waits for its next mount. */
  | { t: 'closed' }
  | { t: 'mount-failed'; error: string }
  | { t: 'query'; id: number; path: string; list: boolean }
  | { t: 'fetch'; id: number; hash: string; size: number }
  | { t: 'result'; id: number; value: VChange[] | VAccessReport }
  | { t: 'log'; level: 'debug' | 'warn'; msg: string };
