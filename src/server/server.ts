import { Server, ServerCredentials, type ServiceDefinition, type UntypedServiceImplementation } from '@grpc/grpc-js';
import { internal } from '../common/errors.js';
import { isLoopbackHost } from '../common/loopback.js';
import type { Logger } from '../common/logger.js';
import type { ServerConfig } from '../config/config.js';
import { ActionCacheServiceImpl } from '../services/action-cache-service.js';
import { prepareActionCacheStores } from '../storage/ac-key-format.js';
import { ActionCache } from '../storage/action-cache.js';
import { ByteStreamServiceImpl } from '../services/bytestream-service.js';
import { CapabilitiesServiceImpl } from '../services/capabilities-service.js';
import { CasService } from '../services/cas-service.js';
import { InstanceNames } from '../services/instances.js';
import { type BlobStore, whenIndexed } from '../storage/blob-store.js';
import { createStore } from '../storage/store-factory.js';
import { enlargeSessionWindows, enlargeStreamWindows } from '../grpc/http2-windows.js';
import { refuseUndecodable } from '../grpc/handlers.js';
import { watchForTlsOnPlaintext } from '../grpc/tls-on-plaintext.js';
import { listenFailure } from '../grpc/listen-failure.js';
import { ExecutionServiceImpl } from '../services/execution-service.js';
import { OperationsServiceImpl } from '../services/operations-service.js';
import { OperationStore } from '../scheduler/operation-store.js';
import type { Scheduler } from '../scheduler/scheduler.js';
import { LocalScheduler } from '../scheduler/local-scheduler.js';
import { SharedScheduler } from '../scheduler/shared-scheduler.js';
import { someStore } from '../storage/store-config.js';
import { StatusServiceImpl } from '../services/status-service.js';
import { registerSchedulerMetrics } from '../observability/scheduler-metrics.js';
import { WorkerService } from '../services/worker-service.js';
import os from 'node:os';
import { BwrapSandbox } from '../sandbox/bwrap-sandbox.js';
import type { Sandbox } from '../sandbox/sandbox.js';
import { createExecutors, defaultExecutorId } from '../worker/create-executors.js';
import { clearWorkDir } from '../worker/run-dir.js';
import path from 'node:path';
import { RunService } from '../services/run-service.js';
import { Registry } from 'prom-client';
import { ServerTls } from '../grpc/tls.js';
import { DirLock } from '../common/dir-lock.js';
import { accessInterceptor, bindOpenCaller } from '../grpc/access-interceptor.js';
import { type Access, createAccess } from '../grpc/auth-config.js';
import { METHOD_PERMISSIONS } from '../services/permissions.js';
import { startMetricsServer, type MetricsServer } from '../observability/metrics-http.js';
import { createTelemetrySinks, type TelemetrySink } from '../observability/telemetry.js';
import { BUILT_IN, type WorkerGroup } from '../executor/executor-slot.js';
import { ServerMetrics } from '../observability/server-metrics.js';
import { HealthService } from '../services/health-service.js';
import { addReflection } from '../services/reflection-service.js';
import { Readiness } from './readiness.js';
import { rpcTracingInterceptor } from '../grpc/rpc-tracing.js';
import type { Tracing } from '../observability/tracing.js';
import type { Autoscaler } from '../autoscale/autoscaler.js';
import { registerAutoscaleMetrics } from '../observability/autoscale-metrics.js';
import { autoscalePools, localSchedulerUrl, startAutoscaler } from './autoscaling.js';

type State = 'STARTING' | 'SERVING' | 'STOPPING' | 'STOPPED';

/**
 * Wires storage and the REAPI services onto one gRPC port. All logic lives in
 * the services and stores; this only builds and connects them.
 */
export class ReprServer {
  private state: State = 'STARTING';
  /**
   * Resolves once the CAS and the action cache have indexed what they held
   * at start (they answer correctly before, but evict nothing); rejects if
   * they never will. A readiness check reports not serving until then.
   */
  readonly storageReady: Promise<void>;

  private constructor(
    private readonly grpc: Server,
    private readonly stores: BlobStore[],
    private readonly byteStream: ByteStreamServiceImpl,
    private readonly log: Logger,
    /** The bound address (host:port), with the real port if 0 was asked for. */
    readonly address: string,
    readonly port: number,
    private readonly execution?: { scheduler: Scheduler; workers: WorkerService; autoscaler?: Autoscaler; closeExecutors?: () => Promise<void> },
    private readonly plugins?: { telemetry: TelemetrySink; metrics?: MetricsServer; health: HealthService; readiness: Readiness; tracing?: Tracing },
    private readonly tls?: ServerTls,
    private readonly lock?: DirLock,
    storageIndexed: Promise<unknown> = Promise.resolve(),
  ) {
    this.state = 'SERVING';
    this.storageReady = storageIndexed.then(() => undefined);
    // Observed here; whoever else awaits it handles the rejection too.
    this.storageReady.catch(() => undefined);
  }

  static async start(config: ServerConfig, log: Logger): Promise<ReprServer> {
    // First: a wrong certificate path should fail the start before anything is opened.
    const tls = config.tls
      ? ServerTls.open({
          certFile: config.tls.certFile,
          keyFile: config.tls.keyFile,
          ...(config.tls.clientCaFile ? { clientCaFile: config.tls.clientCaFile } : {}),
          reloadIntervalMs: config.tls.reloadIntervalSeconds * 1000,
          log: log.child({ svc: 'tls' }),
        })
      : undefined;
    // Before any store is opened: a second server on this directory would wipe the first one's uploads.
    const lock = DirLock.acquire(config.dataDir, {
      role: 'data directory',
      what: 'repr server',
      fix: 'stop it, or give this one another --data-dir',
      choose: 'give --data-dir (or $REPR_DATA_DIR) a writable directory',
    });
    let tracing: Tracing | undefined;
    try {
      // Loaded only when on: a server without tracing never imports the SDK.
      tracing = config.tracing && (await (await import('../observability/tracing.js')).startTracing(config.tracing, log));
      return await ReprServer.startLocked(config, log, tls, lock, tracing);
    } catch (e) {
      await tracing?.shutdown();
      tls?.close();
      lock.release();
      throw e;
    }
  }

  private static async startLocked(
    config: ServerConfig,
    log: Logger,
    tls: ServerTls | undefined,
    lock: DirLock,
    tracing: Tracing | undefined,
  ): Promise<ReprServer> {
    const opened = performance.now();
    const registry = new Registry();
    // Without an endpoint nobody reads them: then no counter or interceptor costs the hot paths anything.
    const serverMetrics = config.metricsListen ? new ServerMetrics(registry) : undefined;
    const cas = await createStore(config.storage.cas, serverMetrics?.storeMeter('cas'));
    prepareActionCacheStores(config.storage.ac, log);
    const ac = await createStore(config.storage.ac, serverMetrics?.storeMeter('ac'));
    let casIndexed = false;
    const indexed = Promise.all([whenIndexed(cas).finally(() => (casIndexed = true)), whenIndexed(ac)]);
    // Handled below once listening; a failure before then must not count as unhandled.
    indexed.catch(() => undefined);
    const instances = new InstanceNames(config.instanceNames);
    const maxBatch = config.maxBatchTotalSizeBytes;

    const telemetry = createTelemetrySinks(config.telemetry, { log, registry });
    const authLog = log.child({ svc: 'auth' });
    const access = createAccess(config.auth, authLog);
    // Tracing first, nearest the transport: it sees every call's final status, refusals included. Calls are timed for
    // metrics in the handler wrapper (add, below) and refusals by the access check: no interceptor layer of their own.
    const interceptors = [
      ...(tracing ? [rpcTracingInterceptor()] : []),
      // Open to everyone (no authenticator, anonymous admin): every check would pass, so the caller is bound per call below instead.
      ...(access.openCaller
        ? []
        : [accessInterceptor({ ...access, methods: METHOD_PERMISSIONS, log: authLog, ...(serverMetrics ? { record: serverMetrics.recordCall } : {}) })]),
    ];
    const grpc = new Server({
      ...(interceptors.length > 0 ? { interceptors } : {}),
      // A full batch plus its framing must fit in one message; anything
      // larger gets grpc-js's own RESOURCE_EXHAUSTED.
      'grpc.max_receive_message_length': Math.max(maxBatch, 4 * 1024 * 1024) + 1024 * 1024,
      'grpc.max_send_message_length': -1,
    });
    const tunedStreams = enlargeStreamWindows(grpc);
    const onCall = access.openCaller && bindOpenCaller(access.openCaller);
    const health = new HealthService(log.child({ svc: 'health' }));
    /** Full names of the services served, for health and reflection. */
    const served = new Set<string>();
    const add = (def: unknown, impl: unknown) => {
      // The interceptor refuses a method without a rule anyway; a server that would serve one is a bug to catch at start.
      for (const m of Object.values(def as ServiceDefinition)) {
        if (!METHOD_PERMISSIONS.has(m.path)) throw internal(`method ${m.path} has no permission rule (services/permissions.ts)`);
        served.add(m.path.split('/')[1]!);
      }
      grpc.addService(...refuseUndecodable(def as ServiceDefinition, impl as UntypedServiceImplementation, onCall, serverMetrics?.recordCall));
    };

    const actionCache = new ActionCache(ac, cas);
    // Known once bound; shared schedulers tell each other where they are.
    const advertised = { current: config.listen };
    const execution: (Awaited<ReturnType<typeof startExecution>> & { autoscaler?: Autoscaler }) | undefined = await startExecution(
      config,
      cas,
      actionCache,
      log,
      advertised,
    );

    const maxBlob = config.maxBlobSizeBytes;
    const uploads = { maxCount: config.uploads.maxCount, maxBytes: config.uploads.maxBytes, idleMs: config.uploads.idleSeconds * 1000 };
    const byteStream = new ByteStreamServiceImpl({ cas, instances, log: log.child({ svc: 'bytestream' }), maxBlobSizeBytes: maxBlob, uploads });
    add(byteStream.definition(), byteStream.handlers());
    add(
      CasService.definition,
      new CasService({ cas, instances, log: log.child({ svc: 'cas' }), maxBatchTotalSizeBytes: maxBatch, maxBlobSizeBytes: maxBlob }).handlers(),
    );
    add(
      ActionCacheServiceImpl.definition,
      new ActionCacheServiceImpl({
        actionCache,
        cas,
        instances,
        log: log.child({ svc: 'ac' }),
        ...(serverMetrics ? { lookups: serverMetrics.lookupCounter('get_action_result') } : {}),
      }).handlers(),
    );
    add(
      CapabilitiesServiceImpl.definition,
      new CapabilitiesServiceImpl({
        instances,
        log,
        maxBatchTotalSizeBytes: maxBatch,
        maxBlobSizeBytes: maxBlob,
        execEnabled: execution !== undefined,
      }).handlers(),
    );
    if (execution) {
      const { scheduler } = execution;
      add(
        ExecutionServiceImpl.definition,
        new ExecutionServiceImpl({
          cas,
          actionCache,
          scheduler,
          instances,
          log: log.child({ svc: 'execution' }),
          ...(serverMetrics ? { lookups: serverMetrics.lookupCounter('execute') } : {}),
        }).handlers(),
      );
      add(OperationsServiceImpl.definition, new OperationsServiceImpl(scheduler, log.child({ svc: 'operations' })).handlers());
      add(WorkerService.definition, execution.workers.handlers());
      add(RunService.definition, new RunService({ scheduler, instances, telemetry, log: log.child({ svc: 'run' }) }).handlers());
      const groups = () => [...(execution.local ? [execution.local] : []), ...execution.workers.groups()];
      const pools = () => execution.autoscaler?.status() ?? [];
      add(StatusServiceImpl.definition, new StatusServiceImpl(scheduler, groups, log.child({ svc: 'status' }), pools).handlers());
      registerSchedulerMetrics(registry, scheduler, groups);
      if (config.autoscale.enabled) registerAutoscaleMetrics(registry, pools);
    }
    add(HealthService.definition, health.handlers());
    for (const name of served) health.addService(name);
    addReflection([...served], { addService: add });

    // Before listening: a WaitExecution for an operation of the previous run
    // must find it queued again, not half-known.
    await execution?.scheduler.recover();
    let schedulerUrl = '';
    const pools = execution && config.autoscale.enabled ? await autoscalePools(config, () => schedulerUrl, log) : undefined;
    // Health answers NOT_SERVING until every condition added here is met; later work joins with one more add.
    const readiness = new Readiness(log);
    readiness.onChange((ready) => health.setServing(ready));
    const listening = readiness.hold('listening');
    const port = await new Promise<number>((resolve, reject) =>
      grpc.bindAsync(config.listen, tls?.credentials ?? ServerCredentials.createInsecure(), (err, p) =>
        err ? reject(listenFailure(config.listen, err)) : resolve(p),
      ),
    );
    listening();
    const tunedSessions = enlargeSessionWindows(grpc);
    const metricsTls = tls && {
      secureContextOptions: () => tls.secureContextOptions(),
      onChange: (listener: () => void) => tls.onChange(listener),
      requireClientCert: config.tls?.metricsRequireClientCert ?? false,
    };
    const metrics = config.metricsListen
      ? await startMetricsServer(config.metricsListen, registry, log, {
          defaultMetrics: true,
          readiness: () => ({ ready: readiness.ready, waitingFor: readiness.waitingFor }),
          ...(metricsTls ? { tls: metricsTls } : {}),
        })
      : undefined;
    if (!tunedStreams || !tunedSessions) log.warn('could not enlarge HTTP/2 flow-control windows (grpc-js internals changed); uploads will be slower');
    const host = config.listen.slice(0, config.listen.lastIndexOf(':'));
    const address = `${host}:${port}`;
    advertised.current = host === '0.0.0.0' || host === '[::]' ? `${os.hostname()}:${port}` : address;
    log.info({ address, dataDir: config.dataDir, tls: tls !== undefined, mtls: tls?.mtls ?? false, casIndexed }, 'repr server listening');
    // Only once listening: a server that fails to bind neither executes nor is exposed.
    warnIfExposed(config, access, authLog);
    execution?.announce();
    // Once listening: the workers it starts dial this address.
    schedulerUrl = localSchedulerUrl(address, tls !== undefined);
    if (execution && pools) {
      execution.autoscaler = startAutoscaler(config, execution.scheduler, execution.workers, pools, log);
    }
    if (!tls && !watchForTlsOnPlaintext(grpc, { url: `grpc://${address}`, log })) {
      log.warn('cannot notice TLS handshakes on this plaintext port (grpc-js internals changed): a client dialling it with TLS by mistake will not be logged');
    }
    const server = new ReprServer(
      grpc,
      [cas, ac],
      byteStream,
      log,
      address,
      port,
      execution,
      { telemetry, metrics, health, readiness, ...(tracing ? { tracing } : {}) },
      tls,
      lock,
      indexed,
    );
    // Not serving until then: a load balancer should prefer a peer that can evict and knows its holdings.
    // Its failure is logged there, once.
    readiness.add('storage index', server.storageReady, 'blobs are still found on disk, but nothing is evicted');
    indexed.then(
      ([c, a]) => log.info({ blobs: c.blobs, bytes: c.bytes, acEntries: a.blobs, seconds: Math.round(performance.now() - opened) / 1000 }, 'CAS indexed'),
      () => undefined,
    );
    return server;
  }

  /** Stops accepting calls, lets running ones finish for up to `graceMs`, then closes stores. */
  async stop(graceMs = 5000): Promise<void> {
    if (this.state !== 'SERVING') return;
    this.state = 'STOPPING';
    // Draining: health watchers hear NOT_SERVING before anything else stops.
    this.plugins?.readiness.drain();
    // First, while workers are still served: the ones it started finish what they execute and exit.
    await this.execution?.autoscaler?.close();
    // Workers' and health watchers' streams never end by themselves; end them so the shutdown is not held up.
    this.execution?.workers.close();
    this.plugins?.health.close();
    await new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        this.grpc.forceShutdown();
        resolve();
      }, graceMs);
      this.grpc.tryShutdown(() => {
        clearTimeout(timer);
        resolve();
      });
    });
    this.tls?.close();
    this.byteStream.close();
    await this.execution?.scheduler.close();
    // The run directory made ahead is still mounted: a mount left behind would outlive the process.
    await this.execution?.closeExecutors?.();
    for (const s of this.stores) await s.close?.();
    await this.plugins?.metrics?.close();
    await this.plugins?.telemetry.close?.();
    // After the calls and executions it traced have ended: their spans go out with the last batch.
    await this.plugins?.tracing?.shutdown();
    // Last: the next server may open the stores once they are closed.
    this.lock?.release();
    this.state = 'STOPPED';
    this.log.info('repr server stopped');
  }
}

/** Whether a listen address (host:port) only accepts connections from this machine. */
export function isLoopbackListen(listen: string): boolean {
  return isLoopbackHost(listen.slice(0, listen.lastIndexOf(':')));
}

/**
 * One loud line per exposure when the server listens beyond loopback:
 * plaintext traffic (tokens in the clear), and callers without credentials
 * who may do anything at all. Client-certificate principals without TLS are
 * refused by the config (they need tls.clientCaFile).
 */
function warnIfExposed(config: ServerConfig, access: Access, log: Logger): void {
  const tls = config.tls !== undefined;
  if (isLoopbackListen(config.listen)) return;
  if (!tls) {
    log.error({ listen: config.listen }, 'listening beyond loopback without TLS: traffic, bearer tokens included, travels in the clear');
  }
  if (access.anonymousHasPermissions) {
    log.error(
      { listen: config.listen, anonymous: access.anonymous?.name },
      'listening beyond loopback with anonymous access: callers without credentials may use this server (configure auth)',
    );
  }
}

/**
 * The scheduler with its operation store, the in-process executors and the
 * service external workers connect to, or undefined for a cache-only server.
 */
async function startExecution(config: ServerConfig, cas: BlobStore, actionCache: ActionCache, log: Logger, address: { current: string }) {
  const ex = config.execution;
  if (!ex.enabled) return undefined;
  const options = { cas, actionCache, log: log.child({ svc: 'scheduler' }), departedGraceMs: ex.departedWorkerGraceSeconds * 1000 };
  let workers: WorkerService | undefined;
  let scheduler: Scheduler;
  if (config.state.url === 'sqlite') {
    scheduler = new LocalScheduler({ ...options, store: new OperationStore(path.join(config.dataDir, 'operations.sqlite')) });
  } else {
    if (!someStore(config.storage.cas, (s) => s.type === 'remote')) {
      log.warn(
        "the scheduler state is shared, but the CAS is this server's own: other schedulers cannot read the blobs uploaded here; give every scheduler the same remote CAS",
      );
    }
    scheduler = await SharedScheduler.open({
      ...options,
      url: config.state.url,
      address: () => config.state.advertise ?? address.current,
      expiryMs: config.state.schedulerExpirySeconds * 1000,
      countWorkers: () => (workers?.groups().length ?? 0) + (ex.executors > 0 ? 1 : 0),
    });
  }
  workers = new WorkerService({
    scheduler,
    log: log.child({ svc: 'workers' }),
    heartbeatTimeoutMs: ex.workerHeartbeatTimeoutSeconds * 1000,
    maxExecutorsPerWorker: ex.maxExecutorsPerWorker,
    maxWorkers: ex.maxWorkers,
  });
  if (ex.executors === 0) {
    const announce = () => log.info('remote execution enabled; no built-in executors, waiting for workers (repr worker)');
    return { scheduler, workers, local: undefined, announce };
  }
  let sandbox: Sandbox;
  try {
    sandbox = new BwrapSandbox({ ...ex.sandbox, ...(ex.readOnlyPaths ? { readOnlyPaths: ex.readOnlyPaths } : {}) });
  } catch (e) {
    // Never run unsandboxed: every action fails with the reason instead.
    log.error({ err: e }, 'sandbox unavailable; actions will fail until it is fixed');
    sandbox = { run: () => Promise.reject(e) };
  }
  const workDir = path.join(config.dataDir, 'work');
  clearWorkDir(workDir); // leftovers of a crash
  const properties = Object.fromEntries(Object.entries(ex.properties).map(([k, v]) => [k, Array.isArray(v) ? v : [v]]));
  const caps = { properties, cpus: ex.cpus, memoryBytes: ex.memoryBytes, networkAllowed: ex.allowNetwork };
  const { slots, close: closeExecutors } = createExecutors({
    count: ex.executors,
    id: defaultExecutorId,
    caps,
    cas: () => cas,
    sandbox,
    workDir,
    log,
    defaultTimeoutMs: ex.defaultTimeoutSeconds * 1000,
    maxTimeoutMs: ex.maxTimeoutSeconds * 1000,
    inputLimits: { maxNodes: ex.maxInputNodes, maxBytes: ex.maxInputBytes, maxDepth: ex.maxInputDepth },
  });
  for (const slot of slots) scheduler.addExecutor(slot);
  const local: WorkerGroup = {
    name: `${os.hostname()} (built-in)`,
    address: 'local',
    principal: BUILT_IN.principal,
    slots,
    properties,
    draining: false,
    connected: new Date(),
  };
  const announce = () => log.info({ executors: ex.executors, properties }, 'remote execution enabled');
  return { scheduler, workers, local, announce, closeExecutors };
}
