import { DIGEST_FUNCTIONS, SHA256 } from '../common/digest.js';
import type { Logger } from '../common/logger.js';
import {
  CapabilitiesService,
  type CapabilitiesServer,
  Compressor_Value,
  type GetCapabilitiesRequest,
  ServerCapabilities,
  SymlinkAbsolutePathStrategy_Value,
} from '../proto/build/bazel/remote/execution/v2/remote_execution.js';
import { unary } from '../grpc/handlers.js';
import type { InstanceNames } from './instances.js';

export interface CapabilitiesOptions {
  instances: InstanceNames;
  log: Logger;
  maxBatchTotalSizeBytes: number;
  maxBlobSizeBytes: number;
  /** True only once this server can run actions. */
  execEnabled: boolean;
}

/**
 * What this server can do, truthfully: clients (Bazel first) decide from it
 * whether to upload, which digest function to use and whether to execute.
 * 2.0 is the lowest version so that Bazel 4.x is served; 2.3 is the newest
 * whose features (digest_function on requests, BLAKE3, zstd) repr implements.
 */
export class CapabilitiesServiceImpl {
  constructor(private readonly o: CapabilitiesOptions) {}

  async getCapabilities(req: GetCapabilitiesRequest): Promise<ServerCapabilities> {
    this.o.instances.check(req.instanceName);
    const fns = DIGEST_FUNCTIONS.map((f) => f.value);
    return ServerCapabilities.fromPartial({
      cacheCapabilities: {
        digestFunctions: fns,
        actionCacheUpdateCapabilities: { updateEnabled: true },
        maxBatchTotalSizeBytes: this.o.maxBatchTotalSizeBytes,
        symlinkAbsolutePathStrategy: SymlinkAbsolutePathStrategy_Value.ALLOWED,
        supportedCompressors: [Compressor_Value.ZSTD],
        supportedBatchUpdateCompressors: [Compressor_Value.ZSTD],
        maxCasBlobSizeBytes: this.o.maxBlobSizeBytes,
      },
      executionCapabilities: {
        digestFunction: SHA256.value,
        execEnabled: this.o.execEnabled,
        digestFunctions: fns,
      },
      lowApiVersion: { major: 2, minor: 0, patch: 0, prerelease: '' },
      highApiVersion: { major: 2, minor: 3, patch: 0, prerelease: '' },
    });
  }

  handlers(): CapabilitiesServer {
    return { getCapabilities: unary(this.o.log, 'GetCapabilities', (r) => this.getCapabilities(r)) };
  }

  static readonly definition = CapabilitiesService;
}
