import type { LiveOperation } from './operation-book.js';

/**
 * Operations waiting for an executor, in the order they are to start:
 * lower priority value first (REAPI), then earlier arrival. An operation put
 * back after losing its executor keeps its arrival, and so its place.
 */
export class ActionQueue {
  private readonly entries: LiveOperation[] = [];

  get length(): number {
    return this.entries.length;
  }

  /** The waiting operations in order; a copy, safe to remove from while iterating. */
  waiting(): LiveOperation[] {
    return [...this.entries];
  }

  insert(op: LiveOperation): void {
    // Kept sorted by insertion, so nothing is ever re-sorted.
    let i = this.entries.length;
    while (i > 0 && comesAfter(this.entries[i - 1]!, op)) i--;
    this.entries.splice(i, 0, op);
  }

  /** Takes an operation out of line; false if it was not waiting. */
  remove(op: LiveOperation): boolean {
    const i = this.entries.indexOf(op);
    if (i < 0) return false;
    this.entries.splice(i, 1);
    return true;
  }

  /**
   * The operation to start next among those `canTake` accepts: the lowest
   * priority value first (REAPI); at that priority, the one with the lowest
   * `turn` (its owners' place in FairShare), earliest arrival among equals.
   * It stays in line until removed.
   */
  next(canTake: (op: LiveOperation) => boolean, turn: (op: LiveOperation) => number): LiveOperation | undefined {
    let best: LiveOperation | undefined;
    let bestTurn = Number.POSITIVE_INFINITY;
    for (const op of this.entries) {
      if (best && op.req.priority !== best.req.priority) break;
      const t = turn(op);
      // The turn first: it is cheap, and in a queue of one owner's actions all but the first lose on it.
      if (t < bestTurn && canTake(op)) {
        best = op;
        bestTurn = t;
      }
    }
    return best;
  }
}

function comesAfter(a: LiveOperation, b: LiveOperation): boolean {
  return a.req.priority > b.req.priority || (a.req.priority === b.req.priority && a.seq > b.seq);
}
