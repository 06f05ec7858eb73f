import type { DialTls } from '../grpc/dial.js';

/**
 * Which tiers of a read-caching store answer FindMissing:
 * - `slow`: the slow store only. It is the source of truth, and a blob the
 *   fast store still holds but the slow one evicted is better re-uploaded
 *   than reported present (a server's CAS).
 * - `fast-first`: the fast store, then the slow store for what the fast one
 *   lacks. For when the slow store is a round trip away and most blobs are
 *   held locally (a worker's cache in front of a remote CAS).
 */
export type FindMissingRule = 'slow' | 'fast-first';

/** A tree of stores, as configured: backends at the leaves, decorators wrapping them. */
export type StoreConfig =
  | { type: 'memory'; limitBytes: number }
  | { type: 'disk'; directory: string; limitBytes: number; fsync: boolean }
  | { type: 'read-caching'; fast: StoreConfig; slow: StoreConfig; maxBlobBytes: number; findMissing?: FindMissingRule }
  /** Refuses blobs whose bytes do not match their digest: what makes a store a CAS. */
  | { type: 'verifying'; backend: StoreConfig }
  /** `tls` only with a grpcs:// target. */
  | { type: 'remote'; target: string; instanceName: string; tls?: DialTls }
  /** One PostgreSQL table (default repr_action_results): an action cache that servers sharing the database share. */
  | { type: 'postgres'; url: string; table?: string };

/** The action cache in the PostgreSQL database at `url`, as servers that share their state there keep it. */
export function postgresAcStore(url: string): StoreConfig {
  return { type: 'postgres', url };
}

/** The nodes directly below `config`. */
export function childStores(config: StoreConfig): StoreConfig[] {
  switch (config.type) {
    case 'read-caching':
      return [config.fast, config.slow];
    case 'verifying':
      return [config.backend];
    case 'memory':
    case 'disk':
    case 'remote':
    case 'postgres':
      return [];
  }
}

/** Whether any node of the tree satisfies `test`. */
export function someStore(config: StoreConfig, test: (node: StoreConfig) => boolean): boolean {
  return test(config) || childStores(config).some((c) => someStore(c, test));
}
