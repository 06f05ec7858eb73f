import type {
  handleServerStreamingCall,
  handleUnaryCall,
  ServerUnaryCall,
  ServerWritableStream,
  ServiceError,
} from '@grpc/grpc-js';
import { Metadata } from '@grpc/grpc-js';
import { Code, codeOf, ReprError } from '../common/errors.js';
import type { Logger } from '../common/logger.js';

/**
 * The single place where thrown errors become gRPC statuses: a ReprError keeps
 * its code and message; anything else is INTERNAL, and logged because it is a
 * bug or an environment failure rather than a bad request.
 */
export function toServiceError(err: unknown, log?: Logger, method?: string): Partial<ServiceError> {
  const code = codeOf(err);
  const message = err instanceof Error ? err.message : String(err);
  if (!(err instanceof ReprError) || code === Code.INTERNAL) log?.error({ err, method }, 'internal error');
  // Errors may carry trailers of their own (e.g. grpc-status-details-bin with a PreconditionFailure).
  const metadata = (err as { metadata?: unknown }).metadata instanceof Metadata ? (err as { metadata: Metadata }).metadata : new Metadata();
  return { code, details: message, message, metadata };
}

export function unary<Req, Res>(
  log: Logger,
  method: string,
  fn: (req: Req, call: ServerUnaryCall<Req, Res>) => Promise<Res>,
): handleUnaryCall<Req, Res> {
  return (call, callback) => {
    fn(call.request, call).then(
      (res) => callback(null, res),
      (err) => callback(toServiceError(err, log, method)),
    );
  };
}

export function serverStreaming<Req, Res>(
  log: Logger,
  method: string,
  fn: (req: Req, call: ServerWritableStream<Req, Res>) => Promise<void>,
): handleServerStreamingCall<Req, Res> {
  return (call) => {
    fn(call.request, call).then(
      () => call.end(),
      (err) => {
        // grpc-js turns an 'error' event into the call's final status, sent after queued messages.
        if (!call.cancelled) call.emit('error', toServiceError(err, log, method));
      },
    );
  };
}

/** Resolves when a stream's buffer has drained, or rejects if the call is cancelled meanwhile. */
export function drained(call: ServerWritableStream<unknown, unknown>): Promise<void> {
  return new Promise((resolve, reject) => {
    const onDrain = () => {
      call.off('cancelled', onCancel);
      resolve();
    };
    const onCancel = () => {
      call.off('drain', onDrain);
      reject(new ReprError(Code.CANCELLED, 'client cancelled the call'));
    };
    call.once('drain', onDrain);
    call.once('cancelled', onCancel);
  });
}
