import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { LruIndex } from '../../../src/storage/lru-index.js';

describe('LruIndex (second-chance LRU)', () => {
  it('evicts the oldest unused entries first and keeps a used one', () => {
    const lru = new LruIndex(30);
    for (const k of ['a', 'b', 'c']) assert.deepEqual(lru.add(k, 10), []);
    assert.equal(lru.touch('a'), true);
    assert.deepEqual(lru.add('d', 10), ['b'], 'a was used, so b is the oldest unused');
    assert.deepEqual(lru.add('e', 10), ['c']);
    assert.deepEqual(lru.add('f', 10), ['d'], 'a got a second chance: it went behind d');
    assert.deepEqual(lru.add('g', 10), ['a'], "a's use counted once");
    assert.equal(lru.totalBytes, 30);
    assert.equal(lru.count, 3);
  });

  it('terminates and stays under the limit when every entry was used', () => {
    const lru = new LruIndex(100);
    for (let i = 0; i < 10; i++) lru.add(`k${i}`, 10);
    for (let i = 0; i < 10; i++) lru.touch(`k${i}`);
    const evicted = lru.add('big', 55);
    assert.equal(evicted.length, 6);
    assert.ok(lru.totalBytes <= 100);
    assert.ok(lru.has('big'));
  });

  it('never evicts the entry being added, re-adding replaces the size, remove frees it', () => {
    const lru = new LruIndex(10);
    assert.deepEqual(lru.add('x', 5), []);
    assert.deepEqual(lru.add('x', 8), []);
    assert.equal(lru.totalBytes, 8);
    assert.deepEqual(lru.add('huge', 50), ['x'], 'the caller rejects oversize blobs; the index only accounts');
    assert.equal(lru.remove('huge'), true);
    assert.equal(lru.totalBytes, 0);
    assert.equal(lru.touch('nope'), false);
  });
});

describe('LruIndex entries recorded before the size is known', () => {
  it('insert evicts nothing and counts a key once; evict then trims, oldest unreferenced first, a slice at a time', () => {
    const lru = new LruIndex(20);
    assert.equal(lru.insert('new', 10, true), true);
    for (const k of ['a', 'b', 'c']) assert.equal(lru.insert(k, 10, false), true);
    assert.equal(lru.insert('a', 99, false), false, 'already there');
    assert.equal(lru.totalBytes, 40);
    assert.deepEqual(lru.evict(1), ['a'], 'the referenced entry gets its second chance');
    assert.deepEqual(lru.evict(1), ['b']);
    assert.deepEqual(lru.evict(1), [], 'under the limit');
    assert.deepEqual([...lru.keys()], ['c', 'new']);
  });
});
