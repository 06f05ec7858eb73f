import { status as GrpcStatus } from '@grpc/grpc-js';
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import type { CallRecorder } from '../grpc/call-timing.js';
import type { StoreMeter } from '../storage/metered-store.js';

/** Counts cache lookups of one kind; what the services are given. */
export interface LookupCounter {
  hit(): void;
  miss(): void;
}

/**
 * From sub-millisecond action-cache hits to Execute streams that last
 * minutes; Prometheus' default buckets start at 5 ms, where half of all
 * calls here would already sit in the first one.
 */
const CALL_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800];

type Observer = { observe(v: number): void };

/**
 * The server's own metrics: calls by method and status code, action-cache
 * lookups, and the traffic, holdings and evictions of the CAS and the action
 * cache stores. Label values come from fixed sets (method paths of the
 * services registered, status code names, tiers of the store config), never
 * from what a client sends. The hot paths only increment children resolved
 * once; everything that can be read instead (store sizes) is read when
 * scraped.
 */
export class ServerMetrics {
  private readonly calls: Histogram<'method' | 'code'>;
  /** Histogram children by method path, then by status code: resolving labels per call costs more than observing. */
  private readonly callChildren = new Map<string, Observer[]>();
  private readonly lookups: Counter<'via' | 'result'>;
  private readonly storeCounters: {
    readBytes: Counter<'store'>;
    readBlobs: Counter<'store'>;
    writtenBytes: Counter<'store'>;
    writtenBlobs: Counter<'store'>;
    evictedBytes: Counter<'store' | 'tier'>;
    evictions: Counter<'store' | 'tier'>;
  };
  private readonly holdings: { store: string; tier: string; size: () => { bytes: number; blobs: number } }[] = [];

  constructor(registry: Registry) {
    const registers = [registry];
    this.calls = new Histogram({
      name: 'repr_grpc_server_handling_seconds',
      help: 'gRPC calls handled, by full method path and status code: from the call headers to its status (_count is the number of calls)',
      labelNames: ['method', 'code'],
      buckets: CALL_BUCKETS,
      registers,
    });
    this.lookups = new Counter({
      name: 'repr_action_cache_lookups_total',
      help: 'Action-cache lookups by how they came (get_action_result, execute) and their result (hit, miss)',
      labelNames: ['via', 'result'],
      registers,
    });
    const counter = <L extends string>(name: string, help: string, labelNames: L[]) => new Counter<L>({ name, help, labelNames, registers });
    this.storeCounters = {
      readBytes: counter('repr_store_read_bytes_total', 'Bytes handed to readers, by store (cas, ac)', ['store']),
      readBlobs: counter('repr_store_read_blobs_total', 'Blob reads served, by store (cas, ac)', ['store']),
      writtenBytes: counter('repr_store_written_bytes_total', 'Bytes of blobs accepted for writing, by store (cas, ac)', ['store']),
      writtenBlobs: counter('repr_store_written_blobs_total', 'Blobs accepted for writing, by store (cas, ac)', ['store']),
      evictedBytes: counter('repr_store_evicted_bytes_total', 'Bytes evicted to stay under the size limit, by store and tier', ['store', 'tier']),
      evictions: counter('repr_store_evictions_total', 'Blobs evicted to stay under the size limit, by store and tier', ['store', 'tier']),
    };
    const holdings = this.holdings;
    const held = (name: string, help: string, pick: (s: { bytes: number; blobs: number }) => number) =>
      new Gauge({
        name,
        help,
        labelNames: ['store', 'tier'],
        registers,
        collect() {
          for (const h of holdings) this.set({ store: h.store, tier: h.tier }, pick(h.size()));
        },
      });
    held('repr_store_stored_bytes', 'Bytes a local backend holds, by store and tier', (s) => s.bytes);
    held('repr_store_stored_blobs', 'Blobs a local backend holds, by store and tier', (s) => s.blobs);
  }

  /** For the handler wrapper and the access check (grpc/call-timing.ts). */
  readonly recordCall: CallRecorder = (method, code, seconds) => {
    let byCode = this.callChildren.get(method);
    if (!byCode) {
      byCode = [];
      this.callChildren.set(method, byCode);
    }
    let child = byCode[code];
    if (!child) {
      child = this.calls.labels(method, GrpcStatus[code] ?? 'UNKNOWN');
      byCode[code] = child;
    }
    child.observe(seconds);
  };

  /** Lookups of the action cache made by `via`. */
  lookupCounter(via: 'get_action_result' | 'execute'): LookupCounter {
    const hits = this.lookups.labels(via, 'hit');
    const misses = this.lookups.labels(via, 'miss');
    // Present from the start, so a hit ratio over them is defined before the first lookup.
    hits.inc(0);
    misses.inc(0);
    return { hit: () => hits.inc(), miss: () => misses.inc() };
  }

  /** What the store tree named `store` reports (see createStore). */
  storeMeter(store: 'cas' | 'ac'): StoreMeter {
    const c = this.storeCounters;
    const readBytes = c.readBytes.labels(store);
    const readBlobs = c.readBlobs.labels(store);
    const writtenBytes = c.writtenBytes.labels(store);
    const writtenBlobs = c.writtenBlobs.labels(store);
    for (const counter of [readBytes, readBlobs, writtenBytes, writtenBlobs]) counter.inc(0);
    return {
      read: (bytes) => {
        readBytes.inc(bytes);
        readBlobs.inc();
      },
      written: (bytes) => {
        writtenBytes.inc(bytes);
        writtenBlobs.inc();
      },
      evicted: (tier, bytes) => {
        c.evictedBytes.inc({ store, tier }, bytes);
        c.evictions.inc({ store, tier });
      },
      holds: (tier, size) => {
        this.holdings.push({ store, tier, size });
        // Present from the start, so a query over them works before the first eviction.
        c.evictedBytes.inc({ store, tier }, 0);
        c.evictions.inc({ store, tier }, 0);
      },
    };
  }
}
