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
    const old = this.entries.get(key);
    if (old !== undefined) {
      this.entries.delete(key);
      this.total -= Math.floor(old / 2);
    }
    this.entries.set(key, size * 2);
    this.total += size;
    const evicted: string[] = [];
    if (this.total <= this.limitBytes) return evicted;
    // Entries moved to the end are met again later in this same walk, with
    // their bit cleared, so the walk ends even if every entry was referenced.
    for (const [k, v] of this.entries) {
      if (this.total <= this.limitBytes) break;
      if (k === key) continue;
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
