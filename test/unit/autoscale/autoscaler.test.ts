import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { ProvidedWorker, WorkerProvider } from '../../../src/autoscale/autoscale.js';
import { Autoscaler, type PoolSpec } from '../../../src/autoscale/autoscaler.js';
import { defaultPolicy } from '../../../src/autoscale/policy.js';
import type { WorkerGroup } from '../../../src/executor/executor-slot.js';
import { captureLogger } from '../../../support/log-capture.js';
import { advanceUntil, finished, flush, harness, OWNER, slot, submitReq } from '../scheduler/harness.js';

const LINUX = { OSFamily: ['linux'] };

/** The seam: a provider that records what it is asked and fails when told to; workers "register" only when the test says. */
class FakeProvider implements WorkerProvider {
  readonly kind = 'process' as const;
  readonly calls: string[] = [];
  failNext = 0;
  /** Like a cloud CLI that cannot say what its machines will be called. */
  anonymous = false;
  private n = 0;
  /** What list() says the provider runs; a string makes it fail with that message. */
  listed: ProvidedWorker[] | string = [];
  lists = 0;
  async list(): Promise<ProvidedWorker[]> {
    this.lists++;
    if (typeof this.listed === 'string') throw new Error(this.listed);
    return this.listed;
  }
  async add(pool: string, count: number): Promise<ProvidedWorker[]> {
    this.calls.push(`add ${count}`);
    if (this.failNext > 0 && this.failNext--) throw new Error('cloud says no');
    return Array.from({ length: count }, () => ({ name: this.anonymous ? '' : `p-${this.n++}`, pool }));
  }
  /** Runs while removable() is being answered: the round trip in which the world may change. */
  duringRemovable: () => Promise<void> = async () => undefined;
  removable?: (pool: string, candidates: readonly string[]) => Promise<string[]>;
  /** From now on the provider can only remove workers in this order, a prefix at a time (a StatefulSet's highest ordinals first). */
  removesOnlyInOrder(order: readonly string[]): void {
    this.removable = async (_pool, candidates) => {
      this.calls.push(`removable ${[...candidates].sort().join(',')}`);
      await this.duringRemovable();
      const out: string[] = [];
      for (const name of order) {
        if (!candidates.includes(name)) break;
        out.push(name);
      }
      return out;
    };
  }
  async remove(_pool: string, names: readonly string[]): Promise<void> {
    this.calls.push(`remove ${[...names].sort().join(',')}`);
    if (this.failNext > 0 && this.failNext--) throw new Error('cloud says no');
  }
  async close(): Promise<void> {}
}

/** A scheduler on a manual clock, with worker groups the test connects, and an autoscaler over them. */
function setup(policy: Partial<typeof defaultPolicy> = {}) {
  const h = harness();
  const { scheduler, clock } = h;
  const groups: WorkerGroup[] = [];
  const provider = new FakeProvider();
  const connect = (name: string, opts: { workMs?: number; properties?: Record<string, string[]> } = {}) => {
    const properties = opts.properties ?? LINUX;
    const s = slot(`${name}/0`, clock, { properties, workMs: opts.workMs ?? 1000 });
    const g: WorkerGroup = { name, address: 'test', principal: 'p', slots: [s], properties, draining: false, connected: new Date(clock.now()) };
    groups.push(g);
    scheduler.addExecutor(s);
    return g;
  };
  const disconnect = (name: string) => {
    const i = groups.findIndex((g) => g.name === name);
    const [g] = groups.splice(i, 1);
    for (const s of g!.slots) scheduler.removeExecutor(s);
  };
  const logs = captureLogger('debug');
  const pool: PoolSpec = {
    name: 'p',
    properties: LINUX,
    policy: {
      ...defaultPolicy,
      executorsPerWorker: 1,
      minWorkers: 1,
      maxWorkers: 4,
      scaleUpCooldownSeconds: 2,
      scaleDownCooldownSeconds: 4,
      mode: 'reactive',
      ...policy,
    },
    provider,
  };
  const drained: string[] = [];
  const scaler = new Autoscaler({
    scheduler,
    workers: () => groups,
    drain: (name) => {
      const g = groups.find((x) => x.name === name);
      if (!g) return false;
      drained.push(name);
      g.draining = true;
      for (const s of g.slots) scheduler.removeExecutor(s);
      return true;
    },
    pools: [pool],
    log: logs.log,
    clock,
    tickMs: 500,
    startTimeoutMs: 30_000,
  });
  /** One tick and the provider calls it makes. */
  const tick = async () => {
    clock.advance(500);
    await scaler.tick();
    await flush();
  };
  return { ...h, scheduler, clock, groups, provider, connect, disconnect, scaler, tick, drained, logs };
}

async function submitMany(s: ReturnType<typeof setup>, n: number, from = 0): Promise<string[]> {
  const names: string[] = [];
  for (let i = from; i < from + n; i++) names.push((await s.scheduler.submit(submitReq(i, [{ name: 'OSFamily', value: 'linux' }]), OWNER)).name);
  return names;
}

describe('Autoscaler', () => {
  it('counts the workers its provider already runs as starting, and does not add to them at its first tick', async () => {
    const s = setup();
    s.provider.listed = [
      { name: 'p-0', pool: 'x' },
      { name: 'other-0', pool: 'x' },
    ];
    await s.tick();
    assert.deepEqual(s.provider.calls, [], 'p-0 is on its way: the minimum of 1 is met');
    assert.equal(s.scaler.status()[0]!.starting, 1, 'a worker not named <pool>- is not the pool’s');
    s.connect('p-0');
    await s.tick();
    assert.equal(s.scaler.status()[0]!.starting, 0);
    assert.deepEqual(s.provider.calls, []);
    assert.equal(s.provider.lists, 1, 'listed once');
    s.scheduler.close();
  });

  it('counts only registered workers when the provider cannot list its own', async () => {
    const s = setup();
    s.provider.listed = 'the API server is down';
    await s.tick();
    assert.equal(s.provider.lists, 1);
    assert.deepEqual(s.provider.calls, ['add 1']);
    assert.ok(s.logs.records().some((r) => r.msg === 'autoscale: could not list the provider’s workers; counting only those registered'));
    s.scheduler.close();
  });

  it('counts workers it asked for as the pool’s until they register, and does not ask again', async () => {
    const s = setup();
    s.connect('p-first');
    await submitMany(s, 20);
    await s.tick();
    assert.deepEqual(s.provider.calls, ['add 3'], '1 worker + 3 asked for = max 4');
    // Cooldown over, load unchanged, none registered yet: still 4 counted, so nothing more is asked for.
    for (let i = 0; i < 8; i++) await s.tick();
    assert.deepEqual(s.provider.calls, ['add 3']);
    assert.equal(s.scaler.status()[0]!.starting, 3);
    s.connect('p-0');
    s.connect('p-1');
    await s.tick();
    const st = s.scaler.status()[0]!;
    assert.equal(st.workers, 3);
    assert.equal(st.starting, 1, 'registered ones leave the starting count');
    assert.deepEqual(s.provider.calls, ['add 3']);
    s.scheduler.close();
  });

  it('counts unnamed workers asked for as started when new workers of the pool register', async () => {
    const s = setup();
    s.provider.anonymous = true;
    s.connect('p-first', { workMs: 600_000 });
    await submitMany(s, 20);
    await s.tick();
    assert.deepEqual(s.provider.calls, ['add 3']);
    s.connect('p-vm-a');
    s.connect('p-vm-b');
    await s.tick();
    assert.equal(s.scaler.status()[0]!.starting, 1);
    assert.equal(s.scaler.status()[0]!.workers, 3);
    s.connect('p-vm-c');
    for (let i = 0; i < 6; i++) await s.tick();
    assert.equal(s.scaler.status()[0]!.starting, 0);
    assert.deepEqual(s.provider.calls, ['add 3'], 'at max: nothing more asked for');
    s.scheduler.close();
  });

  it('gives up on a worker that never registers, so the pool can ask again', async () => {
    const s = setup();
    s.connect('p-first', { workMs: 600_000 });
    await submitMany(s, 20);
    await s.tick();
    assert.deepEqual(s.provider.calls, ['add 3']);
    for (let i = 0; i < 62; i++) await s.tick(); // 31 s > the 30 s start timeout
    assert.deepEqual(s.provider.calls, ['add 3', 'add 3']);
    assert.ok(s.logs.records().some((r) => r.msg === 'autoscale: a worker asked for never registered; no longer counted' && r.worker === 'p-0'));
    s.scheduler.close();
  });

  it('logs a provider failure and tries again on the next tick, cooldown notwithstanding', async () => {
    const s = setup({ scaleUpCooldownSeconds: 60 });
    s.connect('p-first');
    await submitMany(s, 20);
    s.provider.failNext = 1;
    await s.tick();
    assert.deepEqual(s.provider.calls, ['add 3']);
    const failure = s.logs.records().find((r) => r.msg === 'autoscale: adding workers failed; trying again next tick');
    assert.ok(failure, 'the failure is logged');
    assert.match(String((failure.err as { message: string }).message), /cloud says no/);
    await s.tick();
    assert.deepEqual(s.provider.calls, ['add 3', 'add 3'], 'the next tick tries again although the cooldown is 60 s');
    assert.equal(s.scaler.status()[0]!.starting, 3);
    s.scheduler.close();
  });

  it('removes idle workers, the ones with the fewest results first, never a busy one, and stops them once out of rotation', async () => {
    // Static with no minimum: the policy wants every worker gone, so only the controller's own rules keep any.
    const s = setup({ mode: 'static', minWorkers: 0 });
    const veteran = s.connect('p-veteran', { workMs: 200 });
    const warm = await submitMany(s, 3);
    await advanceUntil(s.clock, finished(s.scheduler, warm).all, 50);
    assert.equal(s.scheduler.completedByExecutor().get(veteran.slots[0]!.id), 3);
    s.connect('p-new');
    s.connect('p-busy', { workMs: 60_000, properties: { OSFamily: ['linux'], hold: ['x'] } });
    const long = await s.scheduler.submit(submitReq(99, [{ name: 'hold', value: 'x' }]), OWNER);
    await flush();
    assert.equal(s.scheduler.assignments().get('p-busy/0')?.operationName, long.name);

    await s.tick();
    assert.deepEqual(s.drained, ['p-new', 'p-veteran'], 'idle ones only, the one with the fewest results first');
    assert.deepEqual(s.provider.calls, ['remove p-new,p-veteran'], 'stopped in the same tick: they were idle when taken out of rotation');
    assert.ok(s.logs.records().some((r) => r.msg === 'autoscale: fewer idle workers than the decision removes; busy ones stay' && r.idle === 2));
    for (const name of ['p-new', 'p-veteran']) s.disconnect(name);
    for (let i = 0; i < 4; i++) await s.tick();
    assert.deepEqual(s.drained, ['p-new', 'p-veteran'], 'the busy worker is never taken out of rotation');
    assert.equal(s.scaler.status()[0]!.draining, 0, 'stopped workers that left are forgotten');
    s.scheduler.close();
  });

  it('leaves a worker executing an action alone; the action completes once and nothing is handed back', async () => {
    const s = setup({ mode: 'static', minWorkers: 1 });
    s.connect('p-a', { workMs: 3000 });
    s.connect('p-b', { workMs: 3000 });
    const [op] = await submitMany(s, 1);
    await flush();
    const busyWorker = [...s.scheduler.assignments().keys()][0]!.split('/')[0]!;
    const idleWorker = busyWorker === 'p-a' ? 'p-b' : 'p-a';
    await s.tick();
    assert.deepEqual(s.drained, [idleWorker]);
    assert.deepEqual(s.provider.calls, [`remove ${idleWorker}`]);
    s.disconnect(idleWorker);
    const done = finished(s.scheduler, [op!]);
    await advanceUntil(s.clock, done.all, 100);
    assert.equal(done.states.get(op!)?.response?.status?.code ?? 0, 0);
    assert.equal(s.scheduler.stats().completed, 1);
    assert.equal(s.scheduler.stats().requeued, 0, 'nothing was handed back');
    assert.deepEqual(s.drained, [idleWorker], 'at the minimum, the worker that executed stays');
    s.scheduler.close();
  });

  it('asks a provider that can only remove some workers which ones, and drains only a prefix of its order that is still idle', async () => {
    const s = setup({ mode: 'static', minWorkers: 1 });
    const hold = { OSFamily: ['linux'], hold: ['x'] };
    s.provider.removesOnlyInOrder(['p-3', 'p-2', 'p-1', 'p-0']);
    for (const name of ['p-0', 'p-1']) s.connect(name);
    s.connect('p-2', { workMs: 60_000, properties: hold });
    s.connect('p-3', { workMs: 60_000, properties: hold });
    await s.scheduler.submit(submitReq(90, [{ name: 'hold', value: 'x' }]), OWNER);
    await flush();
    const busy = [...s.scheduler.assignments().keys()][0]!.split('/')[0]!;
    assert.ok(busy === 'p-2' || busy === 'p-3');
    await s.tick();
    if (busy === 'p-3') {
      // p-3 cannot go, so nothing can: removing p-2 or lower would leave a gap.
      assert.deepEqual(s.drained, []);
    } else {
      assert.deepEqual(s.drained, ['p-3'], 'only the top of the order, though p-0 and p-1 are idle too');
    }
    assert.deepEqual(s.provider.calls[0], `removable ${['p-0', 'p-1', 'p-2', 'p-3'].filter((n) => n !== busy).join(',')}`);
    s.scheduler.close();
  });

  it('drains nothing that became busy while the provider was asked which workers can go', async () => {
    const s = setup({ mode: 'static', minWorkers: 1 });
    const hold = { OSFamily: ['linux'], hold: ['x'] };
    s.provider.removesOnlyInOrder(['p-1', 'p-0']);
    s.connect('p-0');
    s.connect('p-1', { workMs: 60_000, properties: hold });
    s.provider.duringRemovable = async () => {
      await s.scheduler.submit(submitReq(91, [{ name: 'hold', value: 'x' }]), OWNER);
      await flush();
    };
    await s.tick();
    assert.equal(s.scheduler.assignments().has('p-1/0'), true, 'the action went to p-1 during the round trip');
    assert.deepEqual(s.drained, [], 'p-1 was idle when asked about, busy when it would have been drained');
    assert.ok(s.logs.records().some((r) => r.msg === 'autoscale: fewer idle workers than the decision removes; busy ones stay' && r.idle === 0));
    s.scheduler.close();
  });

  it('tries stopping a drained worker again when the provider failed', async () => {
    const s = setup({ mode: 'static', minWorkers: 1 });
    s.connect('p-a');
    s.connect('p-b');
    s.provider.failNext = 1;
    await s.tick();
    assert.equal(s.drained.length, 1);
    assert.equal(s.provider.calls.length, 1);
    assert.ok(s.logs.records().some((r) => r.msg === 'autoscale: stopping drained workers failed; trying again next tick'));
    await s.tick();
    assert.deepEqual(s.provider.calls, [`remove ${s.drained[0]}`, `remove ${s.drained[0]}`]);
    assert.equal(s.drained.length, 1, 'the other worker is not taken as well');
    s.scheduler.close();
  });
});
