import { status } from '@grpc/grpc-js';
import type { Any } from '../proto/google/protobuf/any.js';
import type { Status } from '../proto/google/rpc/status.js';

export { status as Code };

/**
 * The one error type of repr. It carries a gRPC status code so that any layer
 * (storage, services, scheduler) can decide on the code where it knows best,
 * and grpc-js sends it unchanged: a thrown ReprError reaches the client as
 * `code` + `details` with no per-method mapping.
 */
export class ReprError extends Error {
  readonly code: status;
  /** grpc-js reads `details` as the status message sent to the client. */
  readonly details: string;

  /** google.rpc.Status details (e.g. a PreconditionFailure listing missing blobs), kept through wrap(). */
  readonly statusDetails: readonly Any[];

  constructor(code: status, message: string, options?: { cause?: unknown; statusDetails?: readonly Any[] }) {
    super(message, options);
    this.name = 'ReprError';
    this.code = code;
    this.details = message;
    this.statusDetails = options?.statusDetails ?? [];
  }

  /** Adds context to the message but never changes the code or the details. */
  wrap(context: string): ReprError {
    return new ReprError(this.code, `${context}: ${this.message}`, { cause: this, statusDetails: this.statusDetails });
  }
}

export const invalidArgument = (msg: string): ReprError => new ReprError(status.INVALID_ARGUMENT, msg);
export const notFound = (msg: string): ReprError => new ReprError(status.NOT_FOUND, msg);
export const failedPrecondition = (msg: string): ReprError => new ReprError(status.FAILED_PRECONDITION, msg);
export const resourceExhausted = (msg: string): ReprError => new ReprError(status.RESOURCE_EXHAUSTED, msg);
export const outOfRange = (msg: string): ReprError => new ReprError(status.OUT_OF_RANGE, msg);
export const internal = (msg: string, cause?: unknown): ReprError => new ReprError(status.INTERNAL, msg, { cause });
export const unimplemented = (msg: string): ReprError => new ReprError(status.UNIMPLEMENTED, msg);
export const unavailable = (msg: string): ReprError => new ReprError(status.UNAVAILABLE, msg);
export const cancelled = (msg: string): ReprError => new ReprError(status.CANCELLED, msg);

/** Reads the gRPC code of any thrown value; unknown errors are INTERNAL. */
export function codeOf(err: unknown): status {
  if (err && typeof err === 'object' && 'code' in err && typeof (err as { code: unknown }).code === 'number') {
    return (err as { code: number }).code as status;
  }
  return status.INTERNAL;
}

/** Converts anything thrown into a ReprError, keeping a code it already had. */
export function toReprError(err: unknown, context?: string): ReprError {
  let e: ReprError;
  if (err instanceof ReprError) e = err;
  else if (err instanceof Error) e = new ReprError(codeOf(err), err.message, { cause: err });
  else e = new ReprError(status.INTERNAL, String(err));
  return context ? e.wrap(context) : e;
}

export function isNotFound(err: unknown): boolean {
  return codeOf(err) === status.NOT_FOUND;
}

/**
 * The one way from anything thrown to a google.rpc.Status: what an
 * ExecuteResponse, a RunFinished and a gRPC call's trailers carry. A code it
 * already had is kept (OK and UNKNOWN become INTERNAL: a failure is never OK,
 * and UNKNOWN says nothing a client can act on); details stay with it;
 * `context` prefixes the message (which executor or worker failed).
 */
export function toStatus(err: unknown, context?: string): Status {
  const e = toReprError(err, context);
  const code = e.code === status.OK || e.code === status.UNKNOWN ? status.INTERNAL : e.code;
  return { code, message: e.message, details: [...e.statusDetails] };
}
