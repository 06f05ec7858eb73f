import type { MethodRule, MethodTable } from '../grpc/access-interceptor.js';
import {
  ActionCacheService,
  CapabilitiesService,
  ContentAddressableStorageService,
  ExecutionService,
} from '../proto/build/bazel/remote/execution/v2/remote_execution.js';
import { ByteStreamService } from '../proto/google/bytestream/bytestream.js';
import { OperationsService } from '../proto/google/longrunning/operations.js';
import { RunnerService } from '../proto/repr/run/v1/run.js';
import { SchedulerStatusService, WorkersService } from '../proto/repr/worker/v1/worker.js';
import { parseReadResource, parseWriteResource } from '../reapi/resource-name.js';
import { instanceOfCollection, instanceOfOperation } from '../scheduler/operation-name.js';
import { HealthService } from './health-service.js';
import { REFLECTION_METHODS } from './reflection-service.js';

// Readers of the instance a request names, over the objects the handlers get
// (generated or hand-written decoders; a request that did not decode is a
// marker object naming nothing). undefined: the message names no instance,
// and its handler refuses it if it should have.

const field = (m: unknown, key: string): unknown => (typeof m === 'object' && m !== null ? (m as Record<string, unknown>)[key] : undefined);
const text = (m: unknown, key: string): string | undefined => {
  const v = field(m, key);
  return typeof v === 'string' ? v : undefined;
};

/** REAPI requests: `instance_name`. */
const instanceName = (m: unknown) => text(m, 'instanceName');
/** ByteStream: the instance is the resource name's prefix. Later Write messages may leave the name out. */
const readResource = (m: unknown) => {
  const name = text(m, 'resourceName');
  return name ? parseReadResource(name).instanceName : undefined;
};
const writeResource = (m: unknown) => {
  const name = text(m, 'resourceName');
  return name ? parseWriteResource(name).instanceName : undefined;
};
/** Operations by name: the instance is the name's prefix. */
const operation = (m: unknown) => {
  const name = text(m, 'name');
  return name === undefined ? undefined : instanceOfOperation(name);
};
const collection = (m: unknown) => {
  const name = text(m, 'name');
  return name === undefined ? undefined : instanceOfCollection(name);
};
/** A `repr run` session: each run it starts names its instance. */
const runInstance = (m: unknown) => text(field(m, 'run'), 'instanceName');

const cas = ContentAddressableStorageService;
const rule = (anyOf: MethodRule['anyOf'], instance?: MethodRule['instance'], everyInstance?: boolean): MethodRule => ({
  anyOf,
  ...(instance ? { instance } : {}),
  ...(everyInstance ? { everyInstance } : {}),
});

/**
 * What each method needs, by full path. Anything not listed is refused, so a
 * service added later stays closed until it is given a line here.
 * Operations also check ownership in their handlers: only those who started
 * or joined an operation, or an admin, may see or touch it.
 */
export const METHOD_PERMISSIONS: MethodTable = new Map<string, MethodRule>([
  [CapabilitiesService.getCapabilities.path, rule('authenticated')],

  [cas.findMissingBlobs.path, rule(['cas-read', 'cas-write'], instanceName)],
  [cas.batchReadBlobs.path, rule(['cas-read'], instanceName)],
  [cas.getTree.path, rule(['cas-read'], instanceName)],
  [ByteStreamService.read.path, rule(['cas-read'], readResource)],
  [cas.batchUpdateBlobs.path, rule(['cas-write'], instanceName)],
  [ByteStreamService.write.path, rule(['cas-write'], writeResource)],
  [ByteStreamService.queryWriteStatus.path, rule(['cas-write'], writeResource)],

  [ActionCacheService.getActionResult.path, rule(['ac-read'], instanceName)],
  [ActionCacheService.updateActionResult.path, rule(['ac-write'], instanceName)],

  [ExecutionService.execute.path, rule(['execute'], instanceName)],
  [ExecutionService.waitExecution.path, rule(['execute'], operation)],
  [OperationsService.getOperation.path, rule(['execute'], operation)],
  [OperationsService.listOperations.path, rule(['execute'], collection)],
  [OperationsService.cancelOperation.path, rule(['execute'], operation)],
  [OperationsService.deleteOperation.path, rule(['execute'], operation)],
  [OperationsService.waitOperation.path, rule(['execute'], operation)],

  [RunnerService.session.path, rule(['run'], runInstance)],
  // A worker is handed work of every instance, so its grant must cover all of them.
  [WorkersService.connect.path, rule(['worker'], undefined, true)],
  // `repr status` shows the work of every instance.
  [SchedulerStatusService.getStatus.path, rule(['admin'], undefined, true)],

  // Load balancers and Kubernetes probes send no credentials, and the answer
  // is only whether the server (or one of its services) takes work.
  ...Object.values(HealthService.definition).map((m): [string, MethodRule] => [m.path, rule('anyone')]),
  // The schema of a public API, no more than GetCapabilities reveals: any
  // authenticated caller, and everyone on a server open to anonymous callers.
  ...REFLECTION_METHODS.map((path): [string, MethodRule] => [path, rule('authenticated')]),
]);
