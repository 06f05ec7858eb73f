// The one module below observability that touches OpenTelemetry, and only its
// API package: a facade with no exporter, no SDK and no global side effects
// until observability/tracing.ts registers a provider. That is why it may live
// in common: the scheduler, the executors and the gRPC layer mark their phases
// through it without knowing whether or where spans go. While tracing is off
// (no tracer set) every helper is one branch and allocates nothing.
import {
  type Attributes,
  type Context,
  propagation,
  ROOT_CONTEXT,
  type Span,
  SpanKind,
  SpanStatusCode,
  type TextMapGetter,
  type Tracer,
  trace,
} from '@opentelemetry/api';

/** Where a span belongs in its trace: the parent of the spans started under it. */
export type TraceContext = Context;

export type { Span } from '@opentelemetry/api';

let tracer: Tracer | undefined;

/** Set by observability once an SDK is registered; undefined turns tracing off again. */
export function setTracer(t: Tracer | undefined): void {
  tracer = t;
}

export function tracingEnabled(): boolean {
  return tracer !== undefined;
}

/** A span started under `parent` (a new trace without one), or undefined while tracing is off. */
export function startSpan(name: string, parent: TraceContext | undefined, attributes?: Attributes, kind: SpanKind = SpanKind.INTERNAL): Span | undefined {
  return tracer?.startSpan(name, { kind, ...(attributes ? { attributes } : {}) }, parent ?? ROOT_CONTEXT);
}

/** The context whose spans are children of `span`; `parent` itself while tracing is off. */
export function childContext(parent: TraceContext | undefined, span: Span | undefined): TraceContext | undefined {
  return span ? trace.setSpan(parent ?? ROOT_CONTEXT, span) : parent;
}

/** Ends a span, marked as failed with the error's message when there is one. */
export function endSpan(span: Span | undefined, error?: unknown): void {
  if (!span) return;
  if (error !== undefined) {
    span.setStatus({ code: SpanStatusCode.ERROR, message: error instanceof Error ? error.message : String(error) });
  }
  span.end();
}

/** Runs `fn` as one span under `parent`; the span ends when `fn` settles, as an error if it throws. */
export async function inSpan<T>(
  name: string,
  parent: TraceContext | undefined,
  fn: (span: Span | undefined) => Promise<T>,
  attributes?: Attributes,
): Promise<T> {
  if (!tracer) return fn(undefined);
  const span = startSpan(name, parent, attributes);
  try {
    const out = await fn(span);
    endSpan(span);
    return out;
  } catch (e) {
    endSpan(span, e);
    throw e;
  }
}

/**
 * The W3C Trace Context headers (traceparent, tracestate) that continue
 * `ctx` in another process; empty when tracing is off or nothing is traced.
 */
export function injectTraceContext(ctx: TraceContext | undefined): Record<string, string> {
  const carrier: Record<string, string> = {};
  if (tracer && ctx) propagation.inject(ctx, carrier);
  return carrier;
}

/** The context another process sent (see injectTraceContext); undefined when none or tracing is off. */
export function extractTraceContext<C>(carrier: C, getter: TextMapGetter<C>): TraceContext | undefined {
  if (!tracer) return undefined;
  const ctx = propagation.extract(ROOT_CONTEXT, carrier, getter);
  return trace.getSpanContext(ctx) ? ctx : undefined;
}

/** Reads a plain object of headers, as injectTraceContext writes it. */
export const recordGetter: TextMapGetter<Record<string, string>> = {
  keys: (c) => Object.keys(c),
  get: (c, key) => c[key],
};

export { SpanKind, SpanStatusCode };
