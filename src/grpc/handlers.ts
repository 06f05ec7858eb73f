import type {
  MethodDefinition,
  ServiceDefinition,
  UntypedServiceImplementation,
  handleServerStreamingCall,
  handleUnaryCall,
  ServerUnaryCall,
  ServerWritableStream,
  ServiceError,
} from '@grpc/grpc-js';
import { Metadata } from '@grpc/grpc-js';
import { Code, codeOf, ReprError, toStatus } from '../common/errors.js';
import { Status } from '../proto/google/rpc/status.js';
import type { Logger } from '../common/logger.js';
import { type CallRecorder, timeCall } from './call-timing.js';

/**
 * The single place where thrown errors become gRPC statuses: a ReprError keeps
 * its code and message; anything else is INTERNAL, and logged because it is a
 * bug or an environment failure rather than a bad request.
 */
export function toServiceError(err: unknown, log?: Logger, method?: string): Partial<ServiceError> {
  const code = codeOf(err);
  const message = err instanceof Error ? err.message : String(err);
  if (!(err instanceof ReprError) || code === Code.INTERNAL) log?.error({ err, method }, 'internal error');
  const metadata = new Metadata();
  // Details (e.g. a PreconditionFailure listing missing blobs) travel in the standard trailer.
  if (err instanceof ReprError && err.statusDetails.length > 0) metadata.set('grpc-status-details-bin', Buffer.from(Status.encode(toStatus(err)).finish()));
  return { code, details: message, message, metadata };
}

export function unary<Req, Res>(log: Logger, method: string, fn: (req: Req, call: ServerUnaryCall<Req, Res>) => Promise<Res>): handleUnaryCall<Req, Res> {
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

/** Stands in for a request message that could not be decoded, so that a handler wrapper can refuse it with the right code. */
const UNDECODABLE = Symbol('undecodable request');
interface Undecodable {
  [UNDECODABLE]: string;
}
const undecodable = (m: unknown): m is Undecodable => typeof m === 'object' && m !== null && UNDECODABLE in m;

/**
 * Makes a service answer INVALID_ARGUMENT, naming the method and the decoder's
 * complaint, for a request message that does not decode. grpc-js answers
 * INTERNAL ("Error deserializing request") otherwise: that blames the server
 * for the client's bytes, and a client may retry INTERNAL. The decoder's
 * failure is turned into a marker that the wrapped handler refuses before the
 * service sees it; for request streams, the bad message is never pushed, so a
 * half-received upload is not taken for a finished one.
 */
export function refuseUndecodable(
  def: ServiceDefinition,
  impl: UntypedServiceImplementation,
  /** Run on each call's metadata before its handler (see bindOpenCaller). */
  onCall?: (metadata: Metadata) => void,
  record?: CallRecorder,
): [ServiceDefinition, UntypedServiceImplementation] {
  const outDef: Record<string, MethodDefinition<unknown, unknown>> = {};
  const outImpl: UntypedServiceImplementation = {};
  for (const [key, m] of Object.entries(def) as [string, MethodDefinition<unknown, unknown>][]) {
    const decode = m.requestDeserialize;
    outDef[key] = {
      ...m,
      requestDeserialize: (b: Buffer) => {
        try {
          return decode(b);
        } catch (e) {
          return { [UNDECODABLE]: (e as Error).message } satisfies Undecodable;
        }
      },
    };
    const handler = impl[key] as ((call: never, cb?: never) => void) | undefined;
    if (!handler) continue;
    const refusal = (bad: Undecodable) =>
      ({
        code: Code.INVALID_ARGUMENT,
        details: `${m.path}: request is not a valid message: ${bad[UNDECODABLE]}`,
        metadata: new Metadata(),
      }) as Partial<ServiceError>;
    outImpl[key] = ((call: ServerReadable, given?: (e: Partial<ServiceError> | null) => void) => {
      onCall?.(call.metadata);
      const callback = record ? (timeCall(m.path, call, given as never, record) as typeof given) : given;
      if (!m.requestStream) {
        const req = (call as { request?: unknown }).request;
        if (undecodable(req)) {
          if (callback) callback(refusal(req));
          else call.emit('error', refusal(req));
          return;
        }
        return (handler as (c: unknown, cb?: unknown) => void)(call, callback);
      }
      let refused = false;
      const push = call.push.bind(call);
      call.push = (chunk: unknown) => {
        if (refused) return false;
        if (!undecodable(chunk)) return push(chunk);
        refused = true;
        if (callback) callback(refusal(chunk));
        else call.emit('error', refusal(chunk));
        return false;
      };
      // The service must not answer a call that was already refused.
      const cb = callback ? (...a: unknown[]) => (refused ? undefined : (callback as (...x: unknown[]) => void)(...a)) : undefined;
      return (handler as (c: unknown, cb?: unknown) => void)(call, cb);
    }) as UntypedServiceImplementation[string];
  }
  return [outDef as ServiceDefinition, outImpl];
}

type ServerReadable = {
  metadata: Metadata;
  push(chunk: unknown): boolean;
  emit(event: string, ...args: unknown[]): boolean;
  on(event: string, listener: (...args: never[]) => void): unknown;
};
