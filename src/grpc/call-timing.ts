import { status } from '@grpc/grpc-js';

/** Told of every call once, when it ends: its full method path, its status code and how long it took. */
export type CallRecorder = (method: string, code: status, seconds: number) => void;

type Callback = (err: { code?: number } | null, ...rest: unknown[]) => void;
interface StreamCall {
  on(event: string, listener: (...args: never[]) => void): unknown;
}

/**
 * Times one call from the moment its handler is entered to its status, or to
 * the client's cancellation (CANCELLED: no status is sent then).
 *
 * Done in the handler wrapper every service goes through rather than as a
 * grpc-js server interceptor: on a server with no access check, a first
 * interceptor puts every call through grpc-js's intercepting-call layers,
 * which cost about a tenth of an action-cache hit's CPU (npm run bench --
 * metrics). Calls refused before the handler (the access check) are told
 * to the recorder by whoever refuses them.
 *
 * Returns the callback to hand the handler: a unary or client-streaming
 * call ends through it; a server-streaming or bidi call ends by `end()`
 * (OK), an 'error' event (its code) or cancellation, which are listened for.
 */
export function timeCall(method: string, call: StreamCall, callback: Callback | undefined, record: CallRecorder): Callback | undefined {
  const start = performance.now();
  let done = false;
  const end = (code: number) => {
    if (done) return;
    done = true;
    record(method, code, (performance.now() - start) / 1000);
  };
  call.on('cancelled', () => end(status.CANCELLED));
  if (callback) {
    return (err, ...rest) => {
      end(err ? (err.code ?? status.UNKNOWN) : status.OK);
      callback(err, ...rest);
    };
  }
  // grpc-js turns an 'error' event into the status and then ends the stream, so 'error' comes before 'finish'.
  call.on('error', (e: { code?: number }) => end(e?.code ?? status.UNKNOWN));
  call.on('finish', () => end(status.OK));
  return undefined;
}
