/**
 * Size accounting with least-recently-used order. A Map iterates in insertion
 * order, so re-inserting on use keeps the oldest entry first: O(1) touch and
 * O(1) eviction without a hand-made linked list.
 */
export class LruIndex {
  private readonly entries = new Map<string, number>();
  private total = 0;

  constructor(readonly limitBytes: number) {}

  get totalBytes(): number {
    return this.total;
  }

  get count(): number {
    return this.entries.size;
  }

  has(key: string): boolean {
    return this.entries.has(key);
  }

  /** Marks `key` as just used; false if absent. */
  touch(key: string): boolean {
    const size = this.entries.get(key);
    if (size === undefined) return false;
    this.entries.delete(key);
    this.entries.set(key, size);
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
      this.total -= old;
    }
    this.entries.set(key, size);
    this.total += size;
    const evicted: string[] = [];
    if (this.total <= this.limitBytes) return evicted;
    for (const [k, s] of this.entries) {
      if (this.total <= this.limitBytes) break;
      if (k === key) continue;
      this.entries.delete(k);
      this.total -= s;
      evicted.push(k);
    }
    return evicted;
  }

  remove(key: string): boolean {
    const size = this.entries.get(key);
    if (size === undefined) return false;
    this.entries.delete(key);
    this.total -= size;
    return true;
  }

  keys(): IterableIterator<string> {
    return this.entries.keys();
  }
}
