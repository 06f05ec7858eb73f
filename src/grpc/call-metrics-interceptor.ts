import { ResponderBuilder, ServerInterceptingCall, type ServerInterceptor, ServerListenerBuilder, status } from '@grpc/grpc-js';

/** Told of every call once, when it ends: its full method path, its status code and how long it took. */
export type CallRecorder = (method: string, code: status, seconds: number) => void;

/**
 * Times every call from the arrival of its headers to its status, or to the
 * client's cancellation (counted as CANCELLED: no status is sent then).
 * Installed first among the server's interceptors, it also sees the calls
 * the access interceptor refuses. grpc-js answers methods it does not serve
 * (UNIMPLEMENTED) before any interceptor, so the method paths seen here are
 * only those of registered services: a fixed set.
 */
export function callMetricsInterceptor(record: CallRecorder): ServerInterceptor {
  return (method, call) => {
    const start = performance.now();
    let done = false;
    const end = (code: status) => {
      if (done) return;
      done = true;
      record(method.path, code, (performance.now() - start) / 1000);
    };
    const listener = new ServerListenerBuilder().withOnCancel(() => end(status.CANCELLED)).build();
    const responder = new ResponderBuilder()
      .withStart((next) => next(listener))
      .withSendStatus((s, next) => {
        end(s.code);
        next(s);
      })
      .build();
    return new ServerInterceptingCall(call, responder);
  };
}
