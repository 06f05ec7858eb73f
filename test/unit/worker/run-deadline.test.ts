import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ManualClock } from '../../../src/common/clock.js';
import { Code, codeOf } from '../../../src/common/errors.js';
import { RunDeadline } from '../../../src/worker/run-deadline.js';

const setup = (timeoutMs = 1000) => {
  const clock = new ManualClock();
  const cancel = new AbortController();
  let backstops = 0;
  const deadline = new RunDeadline(cancel.signal, { timeoutMs, clock, backstopAfterMs: 2000, backstop: () => backstops++ });
  return { clock, cancel, deadline, backstops: () => backstops };
};

describe('RunDeadline: the end of a run as one signal', () => {
  it('fires at the timeout with DEADLINE_EXCEEDED, then calls the backstop if the run is still busy', () => {
    const { clock, deadline, backstops } = setup(1000);
    clock.advance(999);
    assert.equal(deadline.signal.aborted, false);
    clock.advance(1);
    assert.equal(deadline.signal.aborted, true);
    assert.equal(deadline.timedOut, true);
    assert.equal(deadline.cancelled, false);
    assert.equal(codeOf(deadline.signal.reason), Code.DEADLINE_EXCEEDED);
    assert.match((deadline.signal.reason as Error).message, /run timed out after 1000 ms/);
    clock.advance(1999);
    assert.equal(backstops(), 0);
    clock.advance(1);
    assert.equal(backstops(), 1);
  });

  it('fires on the caller cancelling with CANCELLED, and is no timeout', () => {
    const { clock, cancel, deadline } = setup();
    cancel.abort();
    assert.equal(deadline.signal.aborted, true);
    assert.equal(deadline.cancelled, true);
    assert.equal(deadline.timedOut, false);
    assert.equal(codeOf(deadline.signal.reason), Code.CANCELLED);
    clock.advance(1000);
    assert.equal(deadline.timedOut, true, 'the deadline still passes; the caller decides which one counts');
  });

  it('is already over for a caller that cancelled before the run began', () => {
    const clock = new ManualClock();
    const cancel = new AbortController();
    cancel.abort();
    const d = new RunDeadline(cancel.signal, { timeoutMs: 1000, clock, backstopAfterMs: 1, backstop: () => undefined });
    assert.throws(
      () => d.throwIfOver(),
      (e: unknown) => codeOf(e) === Code.CANCELLED,
    );
  });

  it('once disposed, neither the deadline nor the backstop fires', () => {
    const { clock, deadline, backstops } = setup(1000);
    deadline.dispose();
    clock.advance(10_000);
    assert.equal(deadline.signal.aborted, false);
    assert.equal(backstops(), 0);
    const late = setup(1000);
    late.clock.advance(1000);
    late.deadline.dispose();
    late.clock.advance(10_000);
    assert.equal(late.backstops(), 0, 'a run that ended after its deadline is not torn down again');
  });

  it('ends every wait of the run at once, and passes through what settles before', async () => {
    const { clock, deadline } = setup(1000);
    assert.equal(await deadline.until(Promise.resolve(7)), 7);
    await assert.rejects(deadline.until(Promise.reject(new Error('boom'))), /boom/);
    const never = deadline.until(new Promise<number>(() => undefined));
    clock.advance(1000);
    await assert.rejects(never, (e: unknown) => codeOf(e) === Code.DEADLINE_EXCEEDED);
    await assert.rejects(deadline.until(Promise.resolve(1)), (e: unknown) => codeOf(e) === Code.DEADLINE_EXCEEDED, 'nothing waits past the end');
  });
});
