/**
 * Size accounting with an approximate least-recently-used order (CLOCK, or
 * "second chance"). A Map iterates in insertion order, oldest first. A use
 * only sets a referenced bit in place, because moving the key to the end
 * (delete + set) on every use was the largest single cost of a 10,000-digest
 * FindMissingBlobs. Eviction walks from the oldest end: a referenced entry
 * loses its bit and moves to the newest end, an unreferenced one goes.
 *
 * Each value packs size * 2 + referenced bit (sizes stay far below 2^52).
 */
export class LruIndex {
  private readonly entries = new Map<string, number>();
  private total = 0;

  constructor(
    readonly limitBytes: number,
    /** Told the size of each entry `add` evicts, for eviction metrics. */
    private readonly onEvict?: (bytes: number) => void,
  ) {}

  get totalBytes(): number {
    return this.total;
  }

  get count(): number {
    return this.entries.size;
  }

  has(key: string): boolean {
    return this.entries.has(key);
  }

  /** Marks `key` as used; false if absent. */
  touch(key: string): boolean {
    const v = this.entries.get(key);
    if (v === undefined) return false;
    if (v % 2 === 0) this.entries.set(key, v + 1);
    return true;
  }

  /**
   * Records `key` as the newest entry and returns the keys that must be
   * evicted to get back under the limit (never `key` itself).
   */
  add(key: string, size: number): string[] {
    this.remove(key);
    this.entries.set(key, size * 2);
    this.total += size;
    return this.evict(Number.POSITIVE_INFINITY, key);
  }

  /**
   * Records `key` as the newest entry unless it is already there, and evicts
   * nothing: for a store that does not yet know everything it holds, where
   * evicting would pick victims among the few entries it knows. `referenced`
   * gives the entry a second chance in the first eviction walk. False if the
   * key was present (its size is then counted once, as first recorded).
   */
  insert(key: string, size: number, referenced: boolean): boolean {
    if (this.entries.has(key)) return false;
    this.entries.set(key, size * 2 + (referenced ? 1 : 0));
    this.total += size;
    return true;
  }

  /**
   * Removes unreferenced entries, oldest first, until the total is under the
   * limit or `max` entries went, and returns their keys; never `keep`.
   */
  evict(max = Number.POSITIVE_INFINITY, keep?: string): string[] {
    const evicted: string[] = [];
    if (this.total <= this.limitBytes) return evicted;
    // Entries moved to the end are met again later in this same walk, with
    // their bit cleared, so the walk ends even if every entry was referenced.
    for (const [k, v] of this.entries) {
      if (this.total <= this.limitBytes || evicted.length >= max) break;
      if (k === keep) continue;
      this.entries.delete(k);
      if (v % 2 === 1) {
        this.entries.set(k, v - 1);
        continue;
      }
      this.total -= v / 2;
      this.onEvict?.(v / 2);
      evicted.push(k);
    }
    return evicted;
  }

  remove(key: string): boolean {
    const v = this.entries.get(key);
    if (v === undefined) return false;
    this.entries.delete(key);
    this.total -= Math.floor(v / 2);
    return true;
  }

  keys(): IterableIterator<string> {
    return this.entries.keys();
  }
}
