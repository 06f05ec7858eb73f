import { Server, ServerCredentials, type ServiceDefinition, type UntypedServiceImplementation } from '@grpc/grpc-js';
import { internal } from '../common/errors.js';
import type { Logger } from '../common/logger.js';
import type { ServerConfig } from '../config/config.js';
import { ActionCacheServiceImpl } from '../cas/action-cache-service.js';
import { ByteStreamServiceImpl } from '../cas/bytestream-service.js';
import { CapabilitiesServiceImpl } from '../cas/capabilities-service.js';
import { CasService } from '../cas/cas-service.js';
import { InstanceNames } from '../cas/instances.js';
import type { BlobStore } from '../storage/blob-store.js';
import { createStore } from '../storage/store-factory.js';
import { enlargeSessionWindows, enlargeStreamWindows } from './http2-windows.js';
import { VerifyingBlobStore } from '../storage/verifying-store.js';

type State = 'STARTING' | 'SERVING' | 'STOPPING' | 'STOPPED';

/**
 * Wires storage and the REAPI services onto one gRPC port. All logic lives in
 * the services and stores; this only builds and connects them.
 */
export class ReprServer {
  private state: State = 'STARTING';

  private constructor(
    private readonly grpc: Server,
    private readonly stores: BlobStore[],
    private readonly byteStream: ByteStreamServiceImpl,
    private readonly log: Logger,
    /** The bound address (host:port), with the real port if 0 was asked for. */
    readonly address: string,
    readonly port: number,
  ) {
    this.state = 'SERVING';
  }

  static async start(config: ServerConfig, log: Logger): Promise<ReprServer> {
    const cas = new VerifyingBlobStore(await createStore(config.storage.cas));
    const ac = await createStore(config.storage.ac);
    const instances = new InstanceNames(config.instanceNames);
    const maxBatch = config.maxBatchTotalSizeBytes;

    const grpc = new Server({
      // A full batch plus its framing must fit in one message; anything
      // larger gets grpc-js's own RESOURCE_EXHAUSTED.
      'grpc.max_receive_message_length': Math.max(maxBatch, 4 * 1024 * 1024) + 1024 * 1024,
      'grpc.max_send_message_length': -1,
    });
    const tunedStreams = enlargeStreamWindows(grpc);
    const add = (def: unknown, impl: unknown) => grpc.addService(def as ServiceDefinition, impl as UntypedServiceImplementation);

    const byteStream = new ByteStreamServiceImpl({ cas, instances, log: log.child({ svc: 'bytestream' }) });
    add(byteStream.definition(), byteStream.handlers());
    add(CasService.definition, new CasService({ cas, instances, log: log.child({ svc: 'cas' }), maxBatchTotalSizeBytes: maxBatch }).handlers());
    add(ActionCacheServiceImpl.definition, new ActionCacheServiceImpl({ ac, cas, instances, log: log.child({ svc: 'ac' }) }).handlers());
    add(
      CapabilitiesServiceImpl.definition,
      new CapabilitiesServiceImpl({ instances, log, maxBatchTotalSizeBytes: maxBatch, execEnabled: false }).handlers(),
    );

    const port = await new Promise<number>((resolve, reject) =>
      grpc.bindAsync(config.listen, ServerCredentials.createInsecure(), (err, p) => (err ? reject(internal(`cannot listen on ${config.listen}: ${err.message}`, err)) : resolve(p))),
    );
    const tunedSessions = enlargeSessionWindows(grpc);
    if (!tunedStreams || !tunedSessions) log.warn('could not enlarge HTTP/2 flow-control windows (grpc-js internals changed); uploads will be slower');
    const host = config.listen.slice(0, config.listen.lastIndexOf(':'));
    const address = `${host}:${port}`;
    log.info({ address, dataDir: config.dataDir }, 'repr server listening');
    return new ReprServer(grpc, [cas, ac], byteStream, log, address, port);
  }

  /** Stops accepting calls, lets running ones finish for up to `graceMs`, then closes stores. */
  async stop(graceMs = 5000): Promise<void> {
    if (this.state !== 'SERVING') return;
    this.state = 'STOPPING';
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
    this.byteStream.close();
    for (const s of this.stores) await s.close?.();
    this.state = 'STOPPED';
    this.log.info('repr server stopped');
  }
}
