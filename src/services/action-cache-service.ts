import { type DigestFunction, digestFunctionFromValue, fromWire } from '../common/digest.js';
import { Code, codeOf, invalidArgument } from '../common/errors.js';
import type { Logger } from '../common/logger.js';
import type { BlobStore } from '../storage/blob-store.js';
import {
  ActionCacheService,
  type ActionCacheServer,
  type ActionResult,
  type GetActionResultRequest,
  type UpdateActionResultRequest,
} from '../proto/build/bazel/remote/execution/v2/remote_execution.js';
import { unary } from '../grpc/handlers.js';
import type { InstanceNames } from './instances.js';
import type { ActionCache } from '../storage/action-cache.js';
import type { LookupCounter } from '../observability/server-metrics.js';

export interface ActionCacheServiceOptions {
  actionCache: ActionCache;
  /** Where inlined outputs are read from. */
  cas: BlobStore;
  instances: InstanceNames;
  log: Logger;
  /** Largest stdout/stderr/output file inlined when a client asks for inlining. */
  maxInlineBytes?: number;
  /** Told of each lookup's hit or miss (NOT_FOUND). */
  lookups?: LookupCounter;
}

/**
 * REAPI ActionCache over the storage-level ActionCache, which decides what
 * counts as a hit; this adds the instance check and inlining.
 */
export class ActionCacheServiceImpl {
  private readonly maxInline: number;

  constructor(private readonly o: ActionCacheServiceOptions) {
    this.maxInline = o.maxInlineBytes ?? 1024 * 1024;
  }

  async getActionResult(req: GetActionResultRequest): Promise<ActionResult> {
    this.o.instances.check(req.instanceName);
    const fn = digestFunctionFromValue(req.digestFunction);
    const action = fromWire(fn, req.actionDigest, 'action_digest');
    let result: ActionResult;
    try {
      result = await this.o.actionCache.get(req.instanceName, action);
    } catch (e) {
      if (codeOf(e) === Code.NOT_FOUND) this.o.lookups?.miss();
      throw e;
    }
    this.o.lookups?.hit();
    await this.inline(fn, result, req);
    return result;
  }

  async updateActionResult(req: UpdateActionResultRequest): Promise<ActionResult> {
    this.o.instances.check(req.instanceName);
    const fn = digestFunctionFromValue(req.digestFunction);
    const action = fromWire(fn, req.actionDigest, 'action_digest');
    if (!req.actionResult) throw invalidArgument('action_result is missing');
    await this.o.actionCache.put(req.instanceName, action, req.actionResult);
    return req.actionResult;
  }

  private async inline(fn: DigestFunction, result: ActionResult, req: GetActionResultRequest): Promise<void> {
    const load = async (d: { hash: string; sizeBytes: number } | undefined): Promise<Buffer | undefined> => {
      if (!d || d.sizeBytes === 0 || d.sizeBytes > this.maxInline) return undefined;
      return this.o.cas.get(fromWire(fn, d));
    };
    if (req.inlineStdout && result.stdoutRaw.length === 0) result.stdoutRaw = (await load(result.stdoutDigest)) ?? result.stdoutRaw;
    if (req.inlineStderr && result.stderrRaw.length === 0) result.stderrRaw = (await load(result.stderrDigest)) ?? result.stderrRaw;
    const wanted = new Set(req.inlineOutputFiles);
    if (wanted.size === 0) return;
    for (const f of result.outputFiles) {
      if (wanted.has(f.path) && f.contents.length === 0) f.contents = (await load(f.digest)) ?? f.contents;
    }
  }

  handlers(): ActionCacheServer {
    const log = this.o.log;
    return {
      getActionResult: unary(log, 'GetActionResult', (r) => this.getActionResult(r)),
      updateActionResult: unary(log, 'UpdateActionResult', (r) => this.updateActionResult(r)),
    };
  }

  static readonly definition = ActionCacheService;
}
