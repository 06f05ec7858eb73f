import { type Metadata, ResponderBuilder, ServerInterceptingCall, type ServerInterceptor, ServerListenerBuilder } from '@grpc/grpc-js';
import { Code } from '../common/errors.js';
import { childContext, extractTraceContext, type Span, SpanKind, SpanStatusCode, startSpan, type TraceContext } from '../common/tracing.js';

/** Each call's context under its RPC span, by the metadata object its handler receives (as callers are bound). */
const contexts = new WeakMap<Metadata, TraceContext>();

/** The context of a call's RPC span, for the spans its handler starts; undefined while tracing is off. */
export function rpcTraceContext(metadata: Metadata | undefined): TraceContext | undefined {
  return metadata ? contexts.get(metadata) : undefined;
}

const metadataGetter = {
  keys: (md: Metadata) => Object.keys(md.getMap()),
  get: (md: Metadata, key: string) => {
    const v = md.get(key)[0];
    return typeof v === 'string' ? v : undefined;
  },
};

/**
 * The codes that mean the server failed, as OpenTelemetry's gRPC conventions
 * count them for server spans; the rest (NOT_FOUND for a cache miss, a bad
 * argument) are the caller's answer, not the server's error.
 */
const SERVER_ERRORS = new Set<number>([Code.UNKNOWN, Code.DEADLINE_EXCEEDED, Code.UNIMPLEMENTED, Code.INTERNAL, Code.UNAVAILABLE, Code.DATA_LOSS]);

/**
 * One SERVER span per call, named "package.Service/Method", continuing the
 * W3C traceparent a client sent in its metadata, and ended with the status
 * the call ends with. It goes first among the server's interceptors, nearest
 * the transport: a call the access interceptor refuses gets its span too,
 * with the refusal's code.
 */
export function rpcTracingInterceptor(): ServerInterceptor {
  return (method, call) => {
    let span: Span | undefined;
    const finish = (code: number, details: string) => {
      const s = span;
      if (!s) return;
      span = undefined;
      s.setAttribute('rpc.grpc.status_code', code);
      if (SERVER_ERRORS.has(code)) s.setStatus({ code: SpanStatusCode.ERROR, message: details });
      s.end();
    };
    const listener = new ServerListenerBuilder()
      .withOnReceiveMetadata((metadata, next) => {
        const parent = extractTraceContext(metadata, metadataGetter);
        const name = method.path.slice(1);
        const slash = name.lastIndexOf('/');
        span = startSpan(
          name,
          parent,
          { 'rpc.system': 'grpc', 'rpc.service': name.slice(0, slash), 'rpc.method': name.slice(slash + 1), 'network.peer.address': call.getPeer() },
          SpanKind.SERVER,
        );
        const ctx = childContext(parent, span);
        if (ctx) contexts.set(metadata, ctx);
        next(metadata);
      })
      .withOnCancel(() => finish(Code.CANCELLED, 'cancelled by the client'))
      .build();
    const responder = new ResponderBuilder()
      .withStart((next) => next(listener))
      .withSendStatus((status, next) => {
        finish(status.code, status.details ?? '');
        next(status);
      })
      .build();
    return new ServerInterceptingCall(call, responder);
  };
}
