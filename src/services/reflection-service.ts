import type { Server } from '@grpc/grpc-js';
import { loadFileDescriptorSetFromBuffer } from '@grpc/proto-loader';
import { ReflectionService } from '@grpc/reflection';
import { FILE_DESCRIPTOR_SET } from '../proto/descriptor-set.js';

/** The methods reflection serves (v1 and the v1alpha that older grpcurl and grpcui still ask). */
export const REFLECTION_METHODS = [
  '/grpc.reflection.v1.ServerReflection/ServerReflectionInfo',
  '/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo',
] as const;

/**
 * gRPC server reflection over the descriptors of our .proto files
 * (src/proto/descriptor-set.ts), listing only `services`: those this server
 * really serves, so a cache-only server does not offer Execution.
 * Registers itself through `addService`, which the server points at its
 * own checked registration.
 */
export function addReflection(services: readonly string[], server: Pick<Server, 'addService'>): void {
  const pkg = loadFileDescriptorSetFromBuffer(Buffer.from(FILE_DESCRIPTOR_SET, 'base64'));
  new ReflectionService(pkg, { services: [...services] }).addToServer(server);
}
