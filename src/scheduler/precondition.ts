import { Metadata } from '@grpc/grpc-js';
import { type Digest } from '../common/digest.js';
import { Code, ReprError } from '../common/errors.js';
import { PreconditionFailure } from '../proto/google/rpc/error_details.js';
import { Status } from '../proto/google/rpc/status.js';

/**
 * REAPI: a missing input is FAILED_PRECONDITION with a PreconditionFailure
 * listing each missing blob as `blobs/{hash}/{size}`; clients (Bazel) read it
 * to upload exactly those and retry.
 */
export function preconditionFailureStatus(missing: Digest[], message: string): Status {
  const detail = PreconditionFailure.encode({
    violations: missing.map((d) => ({
      type: 'MISSING',
      subject: `blobs/${d.fn.omittedInResourceNames ? '' : `${d.fn.name}/`}${d.hash}/${d.sizeBytes}`,
      description: '',
    })),
  }).finish();
  return {
    code: Code.FAILED_PRECONDITION,
    message,
    details: [{ typeUrl: 'type.googleapis.com/google.rpc.PreconditionFailure', value: Buffer.from(detail) }],
  };
}

/** The same, as an error for a gRPC call (details in the grpc-status-details-bin trailer). */
export function missingBlobsError(missing: Digest[], message: string): ReprError & { metadata: Metadata } {
  const status = preconditionFailureStatus(missing, message);
  const err = new ReprError(Code.FAILED_PRECONDITION, message) as ReprError & { metadata: Metadata };
  const md = new Metadata();
  md.set('grpc-status-details-bin', Buffer.from(Status.encode(status).finish()));
  err.metadata = md;
  return err;
}
