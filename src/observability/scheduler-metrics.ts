import { Counter, Gauge, type Registry } from 'prom-client';
import type { Scheduler } from '../scheduler/scheduler.js';
import type { WorkerGroup } from '../executor/executor-slot.js';
import { EXECUTION_OUTCOMES } from '../scheduler/execution-outcome.js';

type ExecutorState = 'busy' | 'idle' | 'draining';
const STATES: readonly ExecutorState[] = ['busy', 'idle', 'draining'];

/** Executors and worker groups by state. A group is busy while any of its executors is, draining once it takes no new work. */
function census(groups: readonly WorkerGroup[], busyIds: ReadonlySet<string>) {
  const executors = { busy: 0, idle: 0, draining: 0 };
  const workers = { busy: 0, idle: 0, draining: 0 };
  for (const g of groups) {
    let busy = 0;
    for (const s of g.slots) if (busyIds.has(s.id)) busy++;
    executors.busy += busy;
    if (g.draining) executors.draining += g.slots.length - busy;
    else executors.idle += g.slots.length - busy;
    workers[g.draining ? 'draining' : busy > 0 ? 'busy' : 'idle']++;
  }
  return { executors, workers };
}

/**
 * The scheduler's state as Prometheus metrics, read when scraped (nothing is
 * updated on the hot path): queue depth, executors and workers by state,
 * utilization, executions by outcome and the running totals `repr status`
 * shows. Counters the scheduler keeps are exported as counters, set from
 * its totals at each scrape.
 */
export function registerSchedulerMetrics(registry: Registry, scheduler: Scheduler, groups: () => WorkerGroup[]): void {
  const registers = [registry];
  const gauge = (name: string, help: string, value: () => number) =>
    new Gauge({
      name,
      help,
      registers,
      collect() {
        this.set(value());
      },
    });
  const counter = (name: string, help: string, value: () => number) =>
    new Counter({
      name,
      help,
      registers,
      collect() {
        this.reset();
        this.inc(value());
      },
    });
  // Schedulers sharing state each export their own series; Prometheus tells
  // them apart by the `instance` label it adds to every target it scrapes, so
  // no scheduler id label (a new value at every restart) is added here. The
  // queue is the exception: every scheduler reports the same shared queue, so
  // aggregate it with max(), not sum().
  gauge(
    'repr_scheduler_queued_actions',
    "Actions waiting for an executor; when schedulers share state, the shared queue (every scheduler's, as of this one's last heartbeat)",
    () => scheduler.queueDepth,
  );
  new Gauge({
    name: 'repr_scheduler_peers',
    help: "Live schedulers sharing this one's state, itself included: 1 for a scheduler that shares nothing, 0 while the shared state cannot be read",
    registers,
    async collect() {
      // A scheduler alone is a farm of one, so `repr_scheduler_peers < N` alerts the same whether or not state is shared.
      this.set(
        await scheduler.peers().then(
          (p) => p.length || 1,
          () => 0,
        ),
      );
    },
  });
  gauge('repr_scheduler_busy_executors', 'Executors executing an action or held for a repr run', () => scheduler.busyExecutors);
  gauge('repr_scheduler_executors', 'Executors connected (built-in and workers)', () => groups().reduce((n, g) => n + (g.draining ? 0 : g.slots.length), 0));
  gauge('repr_scheduler_workers', 'Worker groups connected (the built-in executors count as one)', () => groups().length);
  counter('repr_scheduler_completed_total', 'Results accepted since the scheduler started', () => scheduler.stats().completed);
  counter('repr_scheduler_requeued_total', 'Actions re-queued because their executor was lost', () => scheduler.stats().requeued);
  counter('repr_scheduler_stale_results_total', 'Results that came back for leases already taken back', () => scheduler.stats().staleResults);
  counter(
    'repr_scheduler_untrusted_results_total',
    'Results kept out of the action cache because their worker principal may not write it',
    () => scheduler.stats().untrustedResults,
  );

  const now = () => census(groups(), new Set(scheduler.assignments().keys()));
  const byState = (name: string, help: string, pick: (c: ReturnType<typeof census>) => Record<ExecutorState, number>) =>
    new Gauge({
      name,
      help,
      labelNames: ['state'],
      registers,
      collect() {
        const values = pick(now());
        for (const s of STATES) this.set({ state: s }, values[s]);
      },
    });
  byState('repr_executors', 'Executors by state (busy, idle, draining: busy ones finish their action, idle ones get no more)', (c) => c.executors);
  byState(
    'repr_workers',
    'Worker groups by state (busy: some executor busy; draining: taking no new work); the built-in executors are one group',
    (c) => c.workers,
  );
  gauge('repr_executor_utilization', 'Busy executors over executors not draining (0 to 1; 0 without executors)', () => {
    const { busy, idle } = now().executors;
    return busy + idle === 0 ? 0 : busy / (busy + idle);
  });
  new Counter({
    name: 'repr_executions_total',
    help: `Executions finished, by outcome (${EXECUTION_OUTCOMES.join(', ')}); cache hits of Execute count as cached`,
    labelNames: ['outcome'],
    registers,
    collect() {
      const outcomes = scheduler.stats().outcomes;
      this.reset();
      for (const o of EXECUTION_OUTCOMES) this.inc({ outcome: o }, outcomes[o]);
    },
  });
}
