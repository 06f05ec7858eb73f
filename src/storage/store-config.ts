/** A tree of stores, as configured: backends at the leaves, decorators wrapping them. */
export type StoreConfig =
  | { type: 'memory'; limitBytes: number }
  | { type: 'disk'; directory: string; limitBytes: number; fsync: boolean }
  | { type: 'read-caching'; fast: StoreConfig; slow: StoreConfig; maxBlobBytes: number }
  | { type: 'remote'; target: string; instanceName: string };

