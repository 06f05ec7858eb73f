import { toWire } from '../common/digest.js';
import { ExecuteOperationMetadata, ExecuteResponse } from '../proto/build/bazel/remote/execution/v2/remote_execution.js';
import type { Operation } from '../proto/google/longrunning/operations.js';
import type { OperationState } from '../scheduler/scheduler.js';

const PREFIX = 'type.googleapis.com/build.bazel.remote.execution.v2.';

/** google.longrunning.Operation for an execution: metadata always, the response once done. */
export function toOperation(s: OperationState): Operation {
  const metadata = ExecuteOperationMetadata.encode(
    ExecuteOperationMetadata.fromPartial({ stage: s.stage, actionDigest: toWire(s.actionDigest), digestFunction: s.actionDigest.fn.value }),
  ).finish();
  const op: Operation = {
    name: s.name,
    metadata: { typeUrl: `${PREFIX}ExecuteOperationMetadata`, value: Buffer.from(metadata) },
    done: s.response !== undefined,
  };
  if (s.response) op.response = { typeUrl: `${PREFIX}ExecuteResponse`, value: Buffer.from(ExecuteResponse.encode(s.response).finish()) };
  return op;
}
