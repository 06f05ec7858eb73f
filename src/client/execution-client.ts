import { computeDigest, type Digest, SHA256, toWire } from '../common/digest.js';
import type { ReapiClient } from '../reapi/reapi-client.js';
import { makeGenericClientConstructor, type ServiceDefinition } from '@grpc/grpc-js';
import { dial, type DialOptions } from '../grpc/dial.js';
import {
  Action,
  Command,
  Directory,
  ExecuteOperationMetadata,
  ExecuteResponse,
  ExecutionService,
  type ExecutionStage_Value,
} from '../proto/build/bazel/remote/execution/v2/remote_execution.js';
import { type Operation, OperationsService } from '../proto/google/longrunning/operations.js';

/**
 * Execution and Operations clients for repr's tools, tests and benchmarks,
 * and `uploadAction`, which builds and uploads a one-directory action.
 */
const ExecutionClient = makeGenericClientConstructor(ExecutionService as unknown as ServiceDefinition, 'Execution');
const OperationsClient = makeGenericClientConstructor(OperationsService as unknown as ServiceDefinition, 'Operations');

export interface ActionSpec {
  argv: string[];
  inputs?: Record<string, string>;
  outputFiles?: string[];
  platform?: Record<string, string>;
  timeoutSeconds?: number;
  doNotCache?: boolean;
  /** Makes otherwise identical actions distinct. */
  salt?: string;
}

async function put(client: ReapiClient, data: Uint8Array): Promise<Digest> {
  const b = Buffer.from(data);
  const d = computeDigest(SHA256, b);
  await client.write(d, b);
  return d;
}

/** Uploads an action's Command, input root and Action; returns the action digest. */
export async function uploadAction(client: ReapiClient, spec: ActionSpec): Promise<Digest> {
  const files = [];
  for (const [name, content] of Object.entries(spec.inputs ?? {}).sort())
    files.push({ name, digest: toWire(await put(client, Buffer.from(content))), isExecutable: false });
  const root = await put(client, Directory.encode(Directory.fromPartial({ files })).finish());
  const properties = Object.entries(spec.platform ?? { OSFamily: 'linux' })
    .sort()
    .map(([name, value]) => ({ name, value }));
  const command = await put(
    client,
    Command.encode(
      Command.fromPartial({
        arguments: spec.argv,
        outputFiles: spec.outputFiles ?? [],
        environmentVariables: [{ name: 'PATH', value: '/usr/bin:/bin' }],
        platform: { properties },
      }),
    ).finish(),
  );
  return put(
    client,
    Action.encode(
      Action.fromPartial({
        commandDigest: toWire(command),
        inputRootDigest: toWire(root),
        doNotCache: spec.doNotCache ?? false,
        platform: { properties },
        salt: Buffer.from(spec.salt ?? ''),
        ...(spec.timeoutSeconds ? { timeout: { seconds: spec.timeoutSeconds, nanos: 0 } } : {}),
      }),
    ).finish(),
  );
}

export interface Observed {
  name: string;
  stages: ExecutionStage_Value[];
  response?: ExecuteResponse;
}

export function decodeOperation(op: Operation): { stage: ExecutionStage_Value; response?: ExecuteResponse } {
  const meta = ExecuteOperationMetadata.decode(op.metadata!.value);
  return { stage: meta.stage, ...(op.response ? { response: ExecuteResponse.decode(op.response.value) } : {}) };
}

/** A client for Execution and Operations on the same server. */
export class ExecClient {
  private readonly exec: InstanceType<typeof ExecutionClient>;
  private readonly ops: InstanceType<typeof OperationsClient>;

  /** @param target grpc://host:port, grpcs://host:port or host:port */
  constructor(
    target: string,
    private readonly instanceName = '',
    options: DialOptions = {},
  ) {
    const { address, credentials, options: channel } = dial(target, options);
    // A copy each: grpc-js takes the interceptors out of the options it is given.
    this.exec = new ExecutionClient(address, credentials, { ...channel });
    this.ops = new OperationsClient(address, credentials, { ...channel });
  }

  close(): void {
    this.exec.close();
    this.ops.close();
  }

  private collect(stream: NodeJS.ReadableStream, onFirst?: (name: string) => void): Promise<Observed> {
    return new Promise((resolve, reject) => {
      const seen: Observed = { name: '', stages: [] };
      stream.on('data', (op: Operation) => {
        const d = decodeOperation(op);
        if (!seen.name) onFirst?.(op.name);
        seen.name = op.name;
        seen.stages.push(d.stage);
        if (d.response) seen.response = d.response;
      });
      stream.on('error', reject);
      stream.on('end', () => resolve(seen));
    });
  }

  execute(action: Digest, opts: { skipCacheLookup?: boolean; priority?: number; onFirst?: (name: string) => void } = {}): Promise<Observed> {
    const stream = (this.exec as unknown as { execute(r: unknown): NodeJS.ReadableStream }).execute({
      instanceName: this.instanceName,
      actionDigest: toWire(action),
      skipCacheLookup: opts.skipCacheLookup ?? false,
      executionPolicy: { priority: opts.priority ?? 0 },
      digestFunction: 0,
      inlineOutputFiles: [],
    });
    return this.collect(stream, opts.onFirst);
  }

  waitExecution(name: string): Promise<Observed> {
    return this.collect((this.exec as unknown as { waitExecution(r: unknown): NodeJS.ReadableStream }).waitExecution({ name }));
  }

  private unary<T>(method: string, req: unknown): Promise<T> {
    return new Promise((resolve, reject) =>
      (this.ops as unknown as Record<string, (r: unknown, cb: (e: Error | null, r: T) => void) => void>)[method]!.call(this.ops, req, (e, r) =>
        e ? reject(e) : resolve(r),
      ),
    );
  }

  getOperation(name: string): Promise<Operation> {
    return this.unary('getOperation', { name });
  }

  cancelOperation(name: string): Promise<unknown> {
    return this.unary('cancelOperation', { name });
  }

  listOperations(pageSize: number, pageToken = ''): Promise<{ operations: Operation[]; nextPageToken: string }> {
    return this.unary('listOperations', { name: '', filter: '', pageSize, pageToken, returnPartialSuccess: false });
  }
}
