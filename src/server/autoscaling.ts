import path from 'node:path';
import type { WorkerProvider } from '../autoscale/autoscale.js';
import { Autoscaler, type PoolSpec } from '../autoscale/autoscaler.js';
import { CommandProvider } from '../autoscale/command-provider.js';
import { KubernetesProvider } from '../autoscale/kubernetes-provider.js';
import { ProcessProvider } from '../autoscale/process-provider.js';
import type { Logger } from '../common/logger.js';
import type { AutoscalePoolConfig } from '../config/autoscale-config.js';
import { toKubernetesProviderConfig } from '../config/autoscale-kubernetes-schema.js';
import type { ServerConfig } from '../config/config.js';
import type { Scheduler } from '../scheduler/scheduler.js';
import type { WorkerService } from '../services/worker-service.js';

/** The provider a pool's config names. */
async function providerFor(pool: AutoscalePoolConfig, config: ServerConfig, schedulerUrl: () => string, log: Logger): Promise<WorkerProvider> {
  const p = pool.provider;
  if (p.type === 'kubernetes') return KubernetesProvider.create(toKubernetesProviderConfig(p), { log });
  if (p.type === 'process') {
    return new ProcessProvider({
      name: pool.name,
      scheduler: schedulerUrl,
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
 * Each pool's provider, made before the server listens: one that cannot be
 * made (no kubeconfig, `inCluster` outside a pod) stops the start, since a
 * pool that silently never scales is worse. Workers a provider starts itself
 * dial `schedulerUrl()`, known once the server listens.
 */
export async function autoscalePools(config: ServerConfig, schedulerUrl: () => string, log: Logger): Promise<PoolSpec[]> {
  const pools: PoolSpec[] = [];
  for (const pool of config.autoscale.pools) {
    const plog = log.child({ svc: 'autoscale', pool: pool.name });
    pools.push({ name: pool.name, properties: pool.properties, policy: pool.policy, provider: await providerFor(pool, config, schedulerUrl, plog) });
  }
  return pools;
}

/** The autoscaler over this server's scheduler, connected workers and pools; started, so its first tick comes at once. */
export function startAutoscaler(config: ServerConfig, scheduler: Scheduler, workers: WorkerService, pools: PoolSpec[], log: Logger): Autoscaler {
  const autoscaler = new Autoscaler({
    scheduler,
    workers: () => workers.groups(),
    drain: (name) => workers.drain(name, 'the autoscaler is shrinking its pool'),
    pools,
    log: log.child({ svc: 'autoscale' }),
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
