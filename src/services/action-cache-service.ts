import { type Digest, type DigestFunction, digestFunctionFromValue, digestString, fromWire } from '../common/digest.js';
import { Code, codeOf, invalidArgument, notFound } from '../common/errors.js';
import type { Logger } from '../common/logger.js';
import type { BlobStore } from '../storage/blob-store.js';
import { ActionCacheService, type ActionCacheServer, ActionResult, type GetActionResultRequest, Tree, type UpdateActionResultRequest } from '../proto/build/bazel/remote/execution/v2/remote_execution.js';
import { unary } from '../grpc/handlers.js';
import type { InstanceNames } from './instances.js';
import { acKey, referencedDigests } from '../storage/action-cache.js';

export interface ActionCacheServiceOptions {
  ac: BlobStore;
  cas: BlobStore;
  instances: InstanceNames;
  log: Logger;
  /** Largest stdout/stderr/output file inlined when a client asks for inlining. */
  maxInlineBytes?: number;
}

/**
 * The action cache. Entries are ActionResult messages keyed by instance name
 * and action digest. A result is only served while everything it references is
 * still in the CAS: a hit whose outputs were evicted would make the client
 * fail later, where a miss just makes it run the action again.
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
    const key = acKey(req.instanceName, action);
    let result: ActionResult;
    try {
      result = ActionResult.decode(await this.o.ac.get(key));
    } catch (e) {
      if (codeOf(e) === Code.NOT_FOUND) throw notFound(`no action result for action ${digestString(action)}`);
      throw e;
    }
    const missing = await this.missingOutputs(fn, result);
    if (missing.length > 0) {
      throw notFound(`action result for ${digestString(action)} refers to ${missing.length} blob(s) no longer in the CAS (e.g. ${digestString(missing[0]!)})`);
    }
    await this.inline(fn, result, req);
    return result;
  }

  async updateActionResult(req: UpdateActionResultRequest): Promise<ActionResult> {
    this.o.instances.check(req.instanceName);
    const fn = digestFunctionFromValue(req.digestFunction);
    const action = fromWire(fn, req.actionDigest, 'action_digest');
    if (!req.actionResult) throw invalidArgument('action_result is missing');
    // Validate every digest now: a malformed one stored here would break every later hit.
    referencedDigests(fn, req.actionResult);
    await this.o.ac.put(acKey(req.instanceName, action), Buffer.from(ActionResult.encode(req.actionResult).finish()));
    return req.actionResult;
  }

  /** Every blob the result references (output trees included) that the CAS lacks. */
  private async missingOutputs(fn: DigestFunction, result: ActionResult): Promise<Digest[]> {
    const direct = referencedDigests(fn, result);
    const missing = await this.o.cas.findMissing(direct.all);
    if (missing.length > 0) return missing;
    const inTrees: Digest[] = [];
    for (const t of direct.trees) {
      let tree: Tree;
      try {
        tree = Tree.decode(await this.o.cas.get(t));
      } catch (e) {
        if (codeOf(e) === Code.NOT_FOUND) return [t];
        throw invalidArgument(`output tree ${digestString(t)} is not a Tree message`);
      }
      for (const dir of [tree.root, ...tree.children]) {
        for (const f of dir?.files ?? []) inTrees.push(fromWire(fn, f.digest, `file "${f.name}" in tree ${digestString(t)}`));
      }
    }
    return inTrees.length > 0 ? this.o.cas.findMissing(inTrees) : [];
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
