import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { SchedulerEndpoint } from '../../../src/worker/scheduler-endpoints.js';
import { CREDENTIALS_RETRY_MS, SchedulerRotation, startingPoint } from '../../../src/worker/scheduler-rotation.js';

const at = (...names: string[]): SchedulerEndpoint[] => names.map((n) => ({ target: `grpc://${n}:1`, label: `grpc://${n}:1` }));
const name = (e: SchedulerEndpoint) => /\/\/(\w+):/.exec(e.target)![1];
/** No jitter: each delay is its nominal value. */
const rotation = (start = 0) => new SchedulerRotation({ start, random: () => 0.5 });

describe('SchedulerRotation', () => {
  it('moves to the next scheduler at once, and waits only after every one failed in a row, longer each round', () => {
    const r = rotation();
    const list = at('a', 'b', 'c');
    const seen: string[] = [];
    const verdicts: unknown[] = [];
    for (let i = 0; i < 9; i++) {
      seen.push(name(r.next(list))!);
      verdicts.push(r.ended('unreachable', false));
    }
    assert.deepEqual(seen, ['a', 'b', 'c', 'a', 'b', 'c', 'a', 'b', 'c']);
    const tried = ['grpc://a:1', 'grpc://b:1', 'grpc://c:1'];
    const now = { next: 'now' };
    assert.deepEqual(verdicts, [
      now,
      now,
      { next: 'later', delayMs: 250, tried },
      now,
      now,
      { next: 'later', delayMs: 500, tried },
      now,
      now,
      { next: 'later', delayMs: 1000, tried },
    ]);
  });

  it('after losing a registered scheduler, tries the others first and starts the delays over', () => {
    const r = rotation(1);
    const list = at('a', 'b');
    for (let i = 0; i < 6; i++) {
      r.next(list);
      r.ended('unreachable', false);
    }
    assert.equal(name(r.next(list)), 'b', 'started at 1, three rounds later');
    assert.deepEqual(r.ended('lost', true), { next: 'now' }, 'the other one is tried without waiting');
    assert.equal(name(r.next(list)), 'a');
    assert.deepEqual(r.ended('unreachable', false), { next: 'later', delayMs: 250, tried: ['grpc://b:1', 'grpc://a:1'] });
  });

  it('with one scheduler, behaves as a single scheduler always did: a short wait after losing it, growing ones while it is away', () => {
    const r = rotation();
    const list = at('only');
    r.next(list);
    assert.deepEqual(r.ended('lost', true), { next: 'later', delayMs: 250, tried: ['grpc://only:1'] });
    r.next(list);
    assert.deepEqual(r.ended('unreachable', false), { next: 'later', delayMs: 500, tried: ['grpc://only:1'] });
  });

  it('waits the credentials delay only when every scheduler refused them, and gives up only when none is a scheduler', () => {
    const r = rotation();
    const list = at('a', 'b');
    r.next(list);
    assert.deepEqual(r.ended('credentials', false), { next: 'now' }, 'another scheduler may hold the grant');
    r.next(list);
    const refused = r.ended('credentials', false);
    assert.equal(refused.next === 'later' && refused.delayMs, CREDENTIALS_RETRY_MS);
    r.next(list);
    r.ended('credentials', false);
    r.next(list);
    const mixed = r.ended('unreachable', false);
    assert.equal(mixed.next === 'later' && mixed.delayMs, 500, 'one that may come back without an operator: the usual delay');
    r.next(list);
    r.ended('not-a-scheduler', false);
    r.next(list);
    assert.equal(r.ended('unreachable', false).next, 'later', 'one of them may still be a scheduler');
    r.next(list);
    r.ended('not-a-scheduler', false);
    r.next(list);
    assert.deepEqual(r.ended('not-a-scheduler', false), { next: 'never', tried: ['grpc://a:1', 'grpc://b:1'] });
  });

  it('follows a list that changes between attempts: a new scheduler is tried within the round, a vanished one is skipped', () => {
    const r = rotation();
    assert.equal(name(r.next(at('a', 'b'))), 'a');
    assert.deepEqual(r.ended('unreachable', false), { next: 'now' });
    // DNS now also holds c.
    assert.equal(name(r.next(at('a', 'b', 'c'))), 'b');
    assert.deepEqual(r.ended('unreachable', false), { next: 'now' }, 'c is untried');
    assert.equal(name(r.next(at('a', 'b', 'c'))), 'c');
    assert.equal(r.ended('lost', true).next, 'now');
    // c vanished from DNS along with its scheduler: whatever stands in its place comes next.
    assert.equal(name(r.next(at('a', 'b'))), 'a');
    assert.equal(r.ended('unreachable', false).next, 'now');
    assert.equal(name(r.next(at('a', 'b'))), 'b');
    assert.equal(r.ended('unreachable', false).next, 'later', 'a and b failed since c was lost');
  });

  it('starts where the worker name hashes to: the same place every time, spread over a fleet', () => {
    assert.equal(startingPoint('worker-1'), startingPoint('worker-1'));
    const counts = [0, 0, 0];
    for (let i = 0; i < 300; i++) counts[startingPoint(`host-${i}`) % 3]!++;
    for (const c of counts) assert.ok(c > 60, `each of 3 schedulers gets a fair share of 300 workers: ${counts}`);
    const list = at('a', 'b', 'c');
    assert.equal(name(rotation(startingPoint('host-7')).next(list)), name(list[startingPoint('host-7') % 3]!));
  });
});
