import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Backoff } from '../../../src/common/backoff.js';

describe('Backoff', () => {
  it('doubles from the initial delay up to the cap, and starts over after reset', () => {
    const b = new Backoff({ initialMs: 250, maxMs: 30_000, random: () => 0.5 });
    assert.deepEqual(
      Array.from({ length: 10 }, () => b.next()),
      [250, 500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000],
    );
    b.reset();
    assert.equal(b.next(), 250);
  });

  it('spreads each delay over ±20% by default, never past the cap', () => {
    const low = new Backoff({ initialMs: 1000, maxMs: 1500, random: () => 0 });
    const high = new Backoff({ initialMs: 1000, maxMs: 1500, random: () => 0.999999 });
    assert.deepEqual([low.next(), low.next()], [800, 1200]);
    assert.deepEqual([high.next(), high.next()], [1200, 1500]);
  });
});
