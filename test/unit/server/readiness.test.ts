import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Readiness } from '../../../src/server/readiness.js';
import { captureLogger } from '../../../support/log-capture.js';

describe('Readiness', () => {
  it('is ready once every condition is met, and never again once draining', async () => {
    const capture = captureLogger('warn');
    const r = new Readiness(capture.log);
    const heard: boolean[] = [];
    r.onChange((ready) => heard.push(ready));
    const listening = r.hold('listening');
    let index!: () => void;
    r.add('cas index', new Promise<void>((resolve) => (index = resolve)));
    assert.deepEqual(r.waitingFor, ['listening', 'cas index']);
    listening();
    assert.equal(r.ready, false, 'the index is still being built');
    index();
    await Promise.resolve();
    assert.equal(r.ready, true);
    r.drain();
    assert.equal(r.ready, false);
    r.hold('late')();
    assert.equal(r.ready, false, 'a condition met while draining does not make it ready again');
    assert.deepEqual(heard, [true, false, true, false], 'listeners hear each change once');
    assert.deepEqual(capture.records(), []);
  });

  it('stays not ready when a condition fails, and says which', async () => {
    const capture = captureLogger('warn');
    const r = new Readiness(capture.log);
    r.add('cas index', Promise.reject(new Error('disk full')));
    await new Promise((resolve) => setImmediate(resolve));
    assert.equal(r.ready, false);
    assert.deepEqual(r.waitingFor, ['cas index']);
    assert.deepEqual(
      capture.records().map((x) => x.msg),
      ['not ready: cas index failed'],
    );
  });
});
