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

/**
 * google.longrunning.Operations over the scheduler's operations (in memory
 * and in SQLite). Each call reaches one instance's operations only: List the
 * ones of the collection it names, the others the one whose name carries the
 * operation's instance (the scheduler answers NOT_FOUND for any other).
 */
export class OperationsServiceImpl {
  constructor(
    private readonly scheduler: Scheduler,
    private readonly log: Logger,
  ) {}

  async getOperation(req: GetOperationRequest): Promise<Operation> {
    const s = this.scheduler.get(req.name);
    if (!s) throw notFound(`operation "${req.name}" does not exist`);
    return toOperation(s);
  }

  async listOperations(req: ListOperationsRequest): Promise<ListOperationsResponse> {
    if (req.pageSize < 0) throw invalidArgument(`page_size ${req.pageSize} is negative`);
    const size = Math.min(req.pageSize || 100, 1000);
    const page = this.scheduler.list(instanceOfCollection(req.name), req.pageToken, size + 1);
    const more = page.length > size;
    const ops = page.slice(0, size);
    return { operations: ops.map(toOperation), nextPageToken: more ? ops.at(-1)!.name : '', unreachable: [] };
  }

  async cancelOperation(req: CancelOperationRequest): Promise<Empty> {
    if (!this.scheduler.get(req.name)) throw notFound(`operation "${req.name}" does not exist`);
    this.scheduler.cancel(req.name);
    return {};
  }

  async deleteOperation(req: DeleteOperationRequest): Promise<Empty> {
    if (!this.scheduler.delete(req.name)) throw notFound(`operation "${req.name}" does not exist`);
    return {};
  }

  handlers() {
    return {
      listOperations: unary(this.log, 'ListOperations', (r: ListOperationsRequest) => this.listOperations(r)),
      getOperation: unary(this.log, 'GetOperation', (r: GetOperationRequest) => this.getOperation(r)),
      deleteOperation: unary(this.log, 'DeleteOperation', (r: DeleteOperationRequest) => this.deleteOperation(r)),
      cancelOperation: unary(this.log, 'CancelOperation', (r: CancelOperationRequest) => this.cancelOperation(r)),
      waitOperation: unary(this.log, 'WaitOperation', async () => {
        throw unimplemented('WaitOperation is not supported; use Execution.WaitExecution');
      }),
    };
  }

  static readonly definition = OperationsService;
}
