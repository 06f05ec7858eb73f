import { Counter, Gauge, type Registry } from 'prom-client';
import type { PoolStatus } from '../autoscale/autoscaler.js';

const DIRECTIONS = ['up', 'down', 'hold'] as const;

/** The autoscaler's pools as Prometheus metrics, read from its status when scraped. */
export function registerAutoscaleMetrics(registry: Registry, pools: () => PoolStatus[]): void {
  const registers = [registry];
  const perPool = (name: string, help: string, value: (p: PoolStatus) => number) =>
    new Gauge({
      name,
      help,
      labelNames: ['pool'],
      registers,
      collect() {
        for (const p of pools()) this.set({ pool: p.name }, value(p));
      },
    });
  perPool('repr_autoscale_desired_workers', 'Workers the autoscaler wants the pool to have (its newest decision)', (p) => p.desired);
  // Starting ones count: the decisions count them too, so the two gauges compare.
  perPool('repr_autoscale_workers', 'Workers of the pool in rotation plus those asked for and not registered yet', (p) => p.workers + p.starting);
  perPool('repr_autoscale_predicted_load', 'Executors the newest decision predicted the pool needs', (p) => p.predicted);
  new Counter({
    name: 'repr_autoscale_decisions_total',
    help: 'Decisions taken per pool, by direction (up, down, hold)',
    labelNames: ['pool', 'direction'],
    registers,
    collect() {
      this.reset();
      for (const p of pools()) for (const d of DIRECTIONS) this.inc({ pool: p.name, direction: d }, p.decisions[d]);
    },
  });
}
