import { Gauge, type Registry } from 'prom-client';
import type { Scheduler } from '../scheduler/scheduler.js';
import type { WorkerGroup } from '../executor/executor-slot.js';

/**
 * The scheduler's state as Prometheus gauges, read when scraped (nothing is
 * updated on the hot path): queue depth, busy executors, connected workers
 * and the running totals `repr status` shows.
 */
export function registerSchedulerMetrics(registry: Registry, scheduler: Scheduler, groups: () => WorkerGroup[]): void {
  const gauge = (name: string, help: string, value: () => number) =>
    new Gauge({
      name,
      help,
      registers: [registry],
      collect() {
        this.set(value());
      },
    });
  gauge('repr_scheduler_queued_actions', 'Actions waiting for an executor', () => scheduler.queueDepth);
  gauge('repr_scheduler_busy_executors', 'Executors executing an action or held for a repr run', () => scheduler.busyExecutors);
  gauge('repr_scheduler_executors', 'Executors connected (built-in and workers)', () => groups().reduce((n, g) => n + (g.draining ? 0 : g.slots.length), 0));
  gauge('repr_scheduler_workers', 'Worker groups connected (the built-in executors count as one)', () => groups().length);
  gauge('repr_scheduler_completed_total', 'Results accepted since the scheduler started', () => scheduler.stats().completed);
  gauge('repr_scheduler_requeued_total', 'Actions re-queued because their executor was lost', () => scheduler.stats().requeued);
  gauge('repr_scheduler_stale_results_total', 'Results that came back for leases already taken back', () => scheduler.stats().staleResults);
  gauge(
    'repr_scheduler_untrusted_results_total',
    'Results kept out of the action cache because their worker principal may not write it',
    () => scheduler.stats().untrustedResults,
  );
}
