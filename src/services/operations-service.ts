import { invalidArgument, notFound } from '../common/errors.js';
import type { Logger } from '../common/logger.js';
import {
  type CancelOperationRequest,
  type DeleteOperationRequest,
  type GetOperationRequest,
  type ListOperationsRequest,
  type ListOperationsResponse,
  type Operation,
  OperationsService,
} from '../proto/google/longrunning/operations.js';
import type { Empty } from '../proto/google/protobuf/empty.js';
import { instanceOfCollection } from '../scheduler/operation-name.js';
import type { Scheduler } from '../scheduler/scheduler.js';
import { unary } from '../grpc/handlers.js';
import { unimplemented } from '../common/errors.js';
import { toOperation } from './operation-message.js';
import type { Metadata } from '@grpc/grpc-js';
import { requireCaller } from '../grpc/access-interceptor.js';
import { checkOwner, listedOwner } from './operation-access.js';

/**
 * google.longrunning.Operations over the scheduler's operations (SQLite, or
 * PostgreSQL when shared). Each call reaches one instance's operations only: List the
 * ones of the collection it names, the others the one whose name carries the
 * operation's instance (the scheduler answers NOT_FOUND for any other).
 */
export class OperationsServiceImpl {
  constructor(
    private readonly scheduler: Scheduler,
    private readonly log: Logger,
  ) {}

  async getOperation(req: GetOperationRequest, md: Metadata): Promise<Operation> {
    const caller = requireCaller(md);
    const s = await this.scheduler.get(req.name);
    if (!s) throw notFound(`operation "${req.name}" does not exist`);
    await checkOwner(caller, this.scheduler, req.name, 'GetOperation');
    return toOperation(s);
  }

  /** Without admin on the instance, a caller sees only the operations it owns. */
  async listOperations(req: ListOperationsRequest, md: Metadata): Promise<ListOperationsResponse> {
    const caller = requireCaller(md);
    if (req.pageSize < 0) throw invalidArgument(`page_size ${req.pageSize} is negative`);
    const size = Math.min(req.pageSize || 100, 1000);
    const instance = instanceOfCollection(req.name);
    const page = await this.scheduler.list(instance, req.pageToken, size + 1, listedOwner(caller, instance));
    const more = page.length > size;
    const ops = page.slice(0, size);
    return { operations: ops.map(toOperation), nextPageToken: more ? ops.at(-1)!.name : '', unreachable: [] };
  }

  async cancelOperation(req: CancelOperationRequest, md: Metadata): Promise<Empty> {
    const caller = requireCaller(md);
    if (!(await this.scheduler.get(req.name))) throw notFound(`operation "${req.name}" does not exist`);
    await checkOwner(caller, this.scheduler, req.name, 'CancelOperation');
    await this.scheduler.cancel(req.name);
    return {};
  }

  async deleteOperation(req: DeleteOperationRequest, md: Metadata): Promise<Empty> {
    const caller = requireCaller(md);
    if (!(await this.scheduler.get(req.name))) throw notFound(`operation "${req.name}" does not exist`);
    await checkOwner(caller, this.scheduler, req.name, 'DeleteOperation');
    if (!(await this.scheduler.delete(req.name))) throw notFound(`operation "${req.name}" does not exist`);
    return {};
  }

  handlers() {
    return {
      listOperations: unary(this.log, 'ListOperations', (r: ListOperationsRequest, call) => this.listOperations(r, call.metadata)),
      getOperation: unary(this.log, 'GetOperation', (r: GetOperationRequest, call) => this.getOperation(r, call.metadata)),
      deleteOperation: unary(this.log, 'DeleteOperation', (r: DeleteOperationRequest, call) => this.deleteOperation(r, call.metadata)),
      cancelOperation: unary(this.log, 'CancelOperation', (r: CancelOperationRequest, call) => this.cancelOperation(r, call.metadata)),
      waitOperation: unary(this.log, 'WaitOperation', async () => {
        throw unimplemented('WaitOperation is not supported; use Execution.WaitExecution');
      }),
    };
  }

  static readonly definition = OperationsService;
}
