import { toWire } from '../common/digest.js';
import type { Logger } from '../common/logger.js';
import { toTimestamp } from '../common/time.js';
import type { PoolStatus } from '../autoscale/autoscaler.js';
import {
  type AutoscalePoolStatus,
  type GetStatusResponse,
  SchedulerStatusService,
  type SchedulerStatusServer,
  type WorkerStatus,
} from '../proto/repr/worker/v1/worker.js';
import { unary } from '../grpc/handlers.js';
import type { Scheduler } from '../scheduler/scheduler.js';
import type { WorkerGroup } from '../executor/executor-slot.js';

/**
 * Answers `repr status`: the workers the scheduler has, what they are busy
 * with, and its queue; when schedulers share state, every live one of them
 * and the shared queue.
 */
export class StatusServiceImpl {
  constructor(
    private readonly scheduler: Scheduler,
    /** Every group of executors: the server's own, then connected workers. */
    private readonly groups: () => WorkerGroup[],
    private readonly log: Logger,
    /** The autoscaler's pools, when it runs. */
    private readonly pools: () => PoolStatus[] = () => [],
  ) {}

  async status(): Promise<GetStatusResponse> {
    // Awaited first, so the local figures below are read together after it; an unreadable database fails the call (UNAVAILABLE).
    const peers = await this.scheduler.peers();
    const busy = this.scheduler.assignments();
    const completed = this.scheduler.completedByExecutor();
    const workers: WorkerStatus[] = this.groups().map((g) => ({
      name: g.name,
      address: g.address,
      principal: g.principal,
      executors: g.slots.length,
      properties: Object.entries(g.properties).flatMap(([name, values]) => values.map((value) => ({ name, value }))),
      draining: g.draining,
      connected: toTimestamp(g.connected),
      lastHeartbeat: g.lastHeartbeat ? toTimestamp(g.lastHeartbeat) : undefined,
      running: g.slots.flatMap((s) => {
        const r = busy.get(s.id);
        return r ? [{ operationName: r.operationName, actionDigest: r.actionDigest && toWire(r.actionDigest), started: toTimestamp(r.started) }] : [];
      }),
      completed: g.slots.reduce((n, s) => n + (completed.get(s.id) ?? 0), 0),
    }));
    const c = this.scheduler.stats();
    return {
      workers,
      queued: this.scheduler.queueDepth,
      executing: this.scheduler.busyExecutors,
      completed: c.completed,
      requeued: c.requeued,
      staleResults: c.staleResults,
      schedulers: peers.map((p) => ({
        id: p.id,
        address: p.address,
        started: toTimestamp(p.started),
        lastHeartbeat: toTimestamp(p.lastHeartbeat),
        workers: p.workers,
        executors: p.executors,
        busyExecutors: p.busyExecutors,
        self: p.self,
      })),
      autoscalePools: this.pools().map(poolStatus),
    };
  }

  handlers(): SchedulerStatusServer {
    return { getStatus: unary(this.log, 'GetStatus', () => this.status()) };
  }

  static readonly definition = SchedulerStatusService;
}

function poolStatus(p: PoolStatus): AutoscalePoolStatus {
  return {
    name: p.name,
    provider: p.provider,
    workers: p.workers,
    desired: p.desired,
    starting: p.starting,
    draining: p.draining,
    direction: p.last?.direction ?? '',
    reason: p.last?.reason ?? '',
    decided: p.last ? toTimestamp(new Date(p.last.at)) : undefined,
    lastChangeDirection: p.lastChange?.direction ?? '',
    lastChangeReason: p.lastChange?.reason ?? '',
    lastChange: p.lastChange ? toTimestamp(new Date(p.lastChange.at)) : undefined,
  };
}
