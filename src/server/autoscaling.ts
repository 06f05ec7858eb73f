import path from 'node:path';
import type { WorkerProvider } from '../autoscale/autoscale.js';
import { Autoscaler } from '../autoscale/autoscaler.js';
import { CommandProvider } from '../autoscale/command-provider.js';
import { ProcessProvider } from '../autoscale/process-provider.js';
import type { Logger } from '../common/logger.js';
import type { AutoscalePoolConfig } from '../config/autoscale-config.js';
import type { ServerConfig } from '../config/config.js';
import type { Scheduler } from '../scheduler/scheduler.js';
import type { WorkerService } from '../services/worker-service.js';

/** The provider a pool's config names. */
function providerFor(pool: AutoscalePoolConfig, config: ServerConfig, schedulerUrl: string, log: Logger): WorkerProvider {
  const p = pool.provider;
  if (p.type === 'process') {
    return new ProcessProvider({
      name: pool.name,
      scheduler: () => schedulerUrl,
      properties: pool.properties,
      executors: p.executors,
      workerArgs: p.workerArgs,
      dir: path.join(config.dataDir, 'autoscale', pool.name),
      drainTimeoutMs: p.drainTimeoutSeconds * 1000,
      log,
    });
  }
  return new CommandProvider({ name: pool.name, add: p.add, remove: p.remove, timeoutMs: p.timeoutSeconds * 1000, log });
}

/**
 * The autoscaler over this server's scheduler and connected workers, with a
 * provider per pool; started, so its first tick comes at once. Workers it
 * starts itself dial `schedulerUrl`.
 */
export function startAutoscaler(config: ServerConfig, scheduler: Scheduler, workers: WorkerService, schedulerUrl: string, log: Logger): Autoscaler {
  const alog = log.child({ svc: 'autoscale' });
  const autoscaler = new Autoscaler({
    scheduler,
    workers: () => workers.groups(),
    drain: (name) => workers.drain(name, 'the autoscaler is shrinking its pool'),
    pools: config.autoscale.pools.map((pool) => ({
      name: pool.name,
      properties: pool.properties,
      policy: pool.policy,
      provider: providerFor(pool, config, schedulerUrl, alog.child({ pool: pool.name })),
    })),
    log: alog,
    tickMs: config.autoscale.tickSeconds * 1000,
  });
  autoscaler.start();
  return autoscaler;
}

/** How workers on this machine reach a server listening on `address` (host:port): a wildcard host becomes loopback. */
export function localSchedulerUrl(address: string, tls: boolean): string {
  const i = address.lastIndexOf(':');
  const host = address.slice(0, i);
  const local = host === '0.0.0.0' ? '127.0.0.1' : host === '[::]' ? '[::1]' : host;
  return `${tls ? 'grpcs' : 'grpc'}://${local}:${address.slice(i + 1)}`;
}
