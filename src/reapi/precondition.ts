import { type Digest, digestString } from '../common/digest.js';
import { Code, ReprError } from '../common/errors.js';
import { PreconditionFailure } from '../proto/google/rpc/error_details.js';

/**
 * REAPI: a missing input is FAILED_PRECONDITION with a PreconditionFailure
 * listing each missing blob as `blobs/{hash}/{size}`; clients (Bazel) read it
 * to upload exactly those and retry. As a ReprError, the detail travels to
 * wherever the error is turned into a status (an ExecuteResponse, a call's
 * trailers) by toStatus / the gRPC handlers.
 */
export function missingBlobsError(missing: Digest[], message?: string): ReprError {
  const detail = PreconditionFailure.encode({
    violations: missing.map((d) => ({
      type: 'MISSING',
      subject: `blobs/${d.fn.omittedInResourceNames ? '' : `${d.fn.name}/`}${d.hash}/${d.sizeBytes}`,
      description: '',
    })),
  }).finish();
  return new ReprError(Code.FAILED_PRECONDITION, message ?? `${missing.length} input blob(s) missing from the CAS, e.g. ${digestString(missing[0]!)}`, {
    statusDetails: [{ typeUrl: 'type.googleapis.com/google.rpc.PreconditionFailure', value: Buffer.from(detail) }],
  });
}
