/**
 * Who was given an executor how recently, by owner (a principal, see
 * Caller.owner). Work waiting at the same priority goes to the owner served
 * longest ago, so one build's hundred runs take turns with another user's
 * single run or action instead of all going first.
 */
export class FairShare {
  private tick = 0;
  private readonly last = new Map<string, number>();

  /** When the owner was last served; 0 if never, so a newcomer goes first. */
  lastServed(owner: string): number {
    return this.last.get(owner) ?? 0;
  }

  /** The earliest of several owners' turns: work that several own waits no longer than its most patient owner. */
  earliest(owners: Iterable<string>): number {
    let min = Number.POSITIVE_INFINITY;
    for (const o of owners) min = Math.min(min, this.lastServed(o));
    return min === Number.POSITIVE_INFINITY ? 0 : min;
  }

  served(owners: Iterable<string>): void {
    this.tick++;
    for (const o of owners) this.last.set(o, this.tick);
  }
}
