import type { ExecutorCapabilities } from '../executor/platform.js';
import { unmet } from '../executor/platform.js';
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

  /** Takes the first operation an executor with these capabilities can execute, if any. */
  takeFor(caps: ExecutorCapabilities): LiveOperation | undefined {
    const i = this.entries.findIndex((op) => unmet(op.req.requirements, caps).length === 0);
    return i < 0 ? undefined : this.entries.splice(i, 1)[0];
  }
}

function comesAfter(a: LiveOperation, b: LiveOperation): boolean {
  return a.req.priority > b.req.priority || (a.req.priority === b.req.priority && a.seq > b.seq);
}
