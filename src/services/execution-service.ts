import type { ServerWritableStream } from '@grpc/grpc-js';
import { digestFunctionFromValue, digestString, fromWire } from '../common/digest.js';
import { Code, failedPrecondition, invalidArgument, notFound } from '../common/errors.js';
import type { Logger } from '../common/logger.js';
import type { ActionCache } from '../storage/action-cache.js';
import type { BlobStore } from '../storage/blob-store.js';
import type { InstanceNames } from './instances.js';
import {
  Action,
  Command,
  type ExecuteRequest,
  ExecuteResponse,
  ExecutionService,
  type ExecutionServer,
  type WaitExecutionRequest,
} from '../proto/build/bazel/remote/execution/v2/remote_execution.js';
import type { Operation } from '../proto/google/longrunning/operations.js';
import { missingBlobsError } from '../reapi/precondition.js';
import type { OperationState, Scheduler } from '../scheduler/scheduler.js';
import { serverStreaming } from '../grpc/handlers.js';
import { toOperation } from './operation-message.js';
import { assertRelativePath } from '../reapi/paths.js';
import { requireCaller } from '../grpc/access-interceptor.js';
import { checkOwner } from './operation-access.js';
import type { LookupCounter } from '../observability/server-metrics.js';
import { rpcTraceContext } from '../grpc/rpc-tracing.js';
import { inSpan } from '../common/tracing.js';

/** A blob the client named as a message of some type, decoded; anything else is the client's error, not ours. */
function decodeMessage<T>(type: { decode(b: Uint8Array): T }, name: string, bytes: Uint8Array, what: string): T {
  try {
    return type.decode(bytes);
  } catch (e) {
    throw invalidArgument(`${what} is not a valid ${name}: ${(e as Error).message}`);
  }
}

/**
 * A negative timeout must never reach an executor as "no timeout"; a missing
 * or zero one means the server's default, and every one is capped by the
 * server's maximum.
 */
function checkTimeout(action: Action): void {
  const t = action.timeout;
  if (!t) return;
  if (!Number.isFinite(t.seconds) || !Number.isInteger(t.nanos) || t.nanos <= -1e9 || t.nanos >= 1e9) {
    throw invalidArgument(`action.timeout {seconds: ${t.seconds}, nanos: ${t.nanos}} is not a valid Duration`);
  }
  if (t.seconds < 0 || t.nanos < 0)
    throw invalidArgument(`action.timeout ${t.seconds}s ${t.nanos}ns is negative; give a positive timeout or none for the server's default`);
}

/** Paths in the Command are relative to the input root and stay inside it (checked again by the executor). */
function checkPaths(command: Command): void {
  assertRelativePath(command.workingDirectory, 'command.working_directory');
  for (const p of [...command.outputPaths, ...command.outputFiles, ...command.outputDirectories]) assertRelativePath(p, 'output path');
}

export interface ExecutionServiceOptions {
  cas: BlobStore;
  actionCache: ActionCache;
  scheduler: Scheduler;
  instances: InstanceNames;
  log: Logger;
  /** Told of each action-cache lookup Execute makes. */
  lookups?: LookupCounter;
}

/**
 * REAPI Execution: validates the action (its Action, Command and input root
 * must be in the CAS), answers from the action cache when it can, and
 * otherwise queues the action and streams the operation until it is done.
 */
export class ExecutionServiceImpl {
  constructor(private readonly o: ExecutionServiceOptions) {}

  async execute(req: ExecuteRequest, call: ServerWritableStream<ExecuteRequest, Operation>): Promise<void> {
    const caller = requireCaller(call.metadata);
    this.o.instances.check(req.instanceName);
    const fn = digestFunctionFromValue(req.digestFunction);
    const actionDigest = fromWire(fn, req.actionDigest, 'action_digest');
    if ((await this.o.cas.findMissing([actionDigest])).length > 0) {
      throw missingBlobsError([actionDigest], `action ${digestString(actionDigest)} is not in the CAS; upload it first`);
    }
    const action = decodeMessage(Action, 'Action', await this.o.cas.get(actionDigest), `action_digest ${digestString(actionDigest)}`);
    checkTimeout(action);
    const commandDigest = fromWire(fn, action.commandDigest, 'action.command_digest');
    const inputRoot = fromWire(fn, action.inputRootDigest, 'action.input_root_digest');
    const missing = await this.o.cas.findMissing([commandDigest, inputRoot]);
    if (missing.length > 0) throw missingBlobsError(missing, `${missing.length} blob(s) of action ${digestString(actionDigest)} are not in the CAS`);
    const command = decodeMessage(Command, 'Command', await this.o.cas.get(commandDigest), `action.command_digest ${digestString(commandDigest)}`);
    if (command.arguments.length === 0) throw failedPrecondition(`command ${digestString(commandDigest)} has no arguments`);
    checkPaths(command);

    // Since v2.2 the platform is in the Action; older clients put it in the Command only.
    const platform = action.platform?.properties.length ? action.platform : command.platform;
    const requirements = (platform?.properties ?? []).map((p) => ({ name: p.name, value: p.value }));

    const trace = rpcTraceContext(call.metadata);
    if (!req.skipCacheLookup && !action.doNotCache) {
      const hit = await inSpan('action cache lookup', trace, async (span) => {
        const found = await this.o.actionCache.find(req.instanceName, actionDigest);
        span?.setAttribute('repr.cache_hit', found !== undefined);
        return found;
      });
      if (hit) this.o.lookups?.hit();
      else this.o.lookups?.miss();
      if (hit) {
        const state = await this.o.scheduler.recordCompleted(
          req.instanceName,
          actionDigest,
          ExecuteResponse.fromPartial({ result: hit, cachedResult: true, status: { code: Code.OK } }),
          caller.owner,
        );
        call.write(toOperation(state));
        return;
      }
    }
    const why = this.o.scheduler.unsatisfiable(requirements);
    if (why) throw failedPrecondition(`no executor can execute this action; unmet platform properties: ${why.join(', ')}`);

    const state = await this.o.scheduler.submit(
      {
        instanceName: req.instanceName,
        fn,
        actionDigest,
        action,
        command,
        requirements,
        priority: req.executionPolicy?.priority ?? 0,
        ...(trace ? { trace } : {}),
      },
      caller.owner,
    );
    await this.stream(state.name, call);
  }

  async waitExecution(req: WaitExecutionRequest, call: ServerWritableStream<WaitExecutionRequest, Operation>): Promise<void> {
    // Scoped by the name: the scheduler knows an operation only under its own instance's prefix.
    const caller = requireCaller(call.metadata);
    if (!(await this.o.scheduler.get(req.name))) throw notFound(`operation "${req.name}" does not exist (it may have been deleted); call Execute again`);
    await checkOwner(caller, this.o.scheduler, req.name, 'WaitExecution');
    await this.stream(req.name, call);
  }

  /** Streams every state change of an operation until it is done or the client goes away. */
  private stream(name: string, call: ServerWritableStream<unknown, Operation>): Promise<void> {
    return new Promise<void>((resolve) => {
      let unsubscribe: (() => void) | undefined;
      let finished = false;
      const done = () => {
        if (finished) return;
        finished = true;
        unsubscribe?.();
        call.off('cancelled', done);
        resolve();
      };
      call.on('cancelled', done);
      unsubscribe = this.o.scheduler.watch(name, (s: OperationState) => {
        if (finished) return;
        call.write(toOperation(s));
        if (s.response) done();
      });
      if (finished) unsubscribe();
    });
  }

  handlers(): ExecutionServer {
    const log = this.o.log;
    return {
      execute: serverStreaming(log, 'Execute', (r, call) => this.execute(r, call)),
      waitExecution: serverStreaming(log, 'WaitExecution', (r, call) => this.waitExecution(r, call)),
    };
  }

  static readonly definition = ExecutionService;
}
