import type { ServerWritableStream } from '@grpc/grpc-js';
import { type Digest, digestFunctionFromValue, digestString, fromWire } from '../common/digest.js';
import { Code, codeOf, failedPrecondition, notFound } from '../common/errors.js';
import type { Logger } from '../common/logger.js';
import type { BlobStore } from '../storage/blob-store.js';
import type { ActionCacheServiceImpl } from '../cas/action-cache-service.js';
import type { InstanceNames } from '../cas/instances.js';
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
import { missingBlobsError } from '../scheduler/precondition.js';
import type { OperationState, Scheduler } from '../scheduler/scheduler.js';
import { serverStreaming } from '../server/grpc-util.js';
import { toOperation } from './operation-message.js';

export interface ExecutionServiceOptions {
  cas: BlobStore;
  actionCache: ActionCacheServiceImpl;
  scheduler: Scheduler;
  instances: InstanceNames;
  log: Logger;
}

/**
 * REAPI Execution: validates the action (its Action, Command and input root
 * must be in the CAS), answers from the action cache when it can, and
 * otherwise queues the action and streams the operation until it is done.
 */
export class ExecutionServiceImpl {
  constructor(private readonly o: ExecutionServiceOptions) {}

  async execute(req: ExecuteRequest, call: ServerWritableStream<ExecuteRequest, Operation>): Promise<void> {
    this.o.instances.check(req.instanceName);
    const fn = digestFunctionFromValue(req.digestFunction);
    const actionDigest = fromWire(fn, req.actionDigest, 'action_digest');
    if ((await this.o.cas.findMissing([actionDigest])).length > 0) {
      throw missingBlobsError([actionDigest], `action ${digestString(actionDigest)} is not in the CAS; upload it first`);
    }
    const action = Action.decode(await this.o.cas.get(actionDigest));
    const commandDigest = fromWire(fn, action.commandDigest, 'action.command_digest');
    const inputRoot = fromWire(fn, action.inputRootDigest, 'action.input_root_digest');
    const missing = await this.o.cas.findMissing([commandDigest, inputRoot]);
    if (missing.length > 0) throw missingBlobsError(missing, `${missing.length} blob(s) of action ${digestString(actionDigest)} are not in the CAS`);
    const command = Command.decode(await this.o.cas.get(commandDigest));
    if (command.arguments.length === 0) throw failedPrecondition(`command ${digestString(commandDigest)} has no arguments`);

    // Since v2.2 the platform is in the Action; older clients put it in the Command only.
    const platform = action.platform?.properties.length ? action.platform : command.platform;
    const requirements = (platform?.properties ?? []).map((p) => ({ name: p.name, value: p.value }));

    if (!req.skipCacheLookup && !action.doNotCache) {
      const hit = await this.cachedResult(req.instanceName, fn.value, actionDigest);
      if (hit) {
        const state = this.o.scheduler.recordCompleted(req.instanceName, actionDigest, ExecuteResponse.fromPartial({ result: hit, cachedResult: true, status: { code: Code.OK } }));
        call.write(toOperation(state));
        return;
      }
    }
    const why = this.o.scheduler.unsatisfiable(requirements);
    if (why) throw failedPrecondition(`no executor can run this action; unmet platform properties: ${why.join(', ')}`);

    const state = this.o.scheduler.submit({
      instanceName: req.instanceName,
      fn,
      actionDigest,
      action,
      command,
      requirements,
      priority: req.executionPolicy?.priority ?? 0,
    });
    await this.stream(state.name, call);
  }

  private async cachedResult(instanceName: string, digestFunction: number, actionDigest: Digest) {
    try {
      return await this.o.actionCache.getActionResult({
        instanceName,
        actionDigest: { hash: actionDigest.hash, sizeBytes: actionDigest.sizeBytes },
        inlineStdout: false,
        inlineStderr: false,
        inlineOutputFiles: [],
        digestFunction,
      });
    } catch (e) {
      if (codeOf(e) === Code.NOT_FOUND) return undefined;
      throw e;
    }
  }

  async waitExecution(req: WaitExecutionRequest, call: ServerWritableStream<WaitExecutionRequest, Operation>): Promise<void> {
    if (!this.o.scheduler.get(req.name)) throw notFound(`operation "${req.name}" does not exist (it may have been deleted); call Execute again`);
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
