import { DiagLogLevel, diag, propagation, trace } from '@opentelemetry/api';
import type { Logger } from '../common/logger.js';
import { setTracer } from '../common/tracing.js';
import type { TracingConfig } from './tracing-config.js';

/** A running trace pipeline: spans are batched and posted to the OTLP endpoint until shutdown. */
export interface Tracing {
  /** Sends what is buffered, then stops; later spans are dropped. */
  shutdown(): Promise<void>;
}

/** The instrumentation scope of every span repr makes. */
const SCOPE = 'repr';

/**
 * Registers the OpenTelemetry SDK for this process and points common/tracing
 * at it. The SDK and exporter are imported here, on demand: a process with
 * tracing off never loads them (about 40 modules), and its spans are one
 * branch each (see common/tracing.ts).
 *
 * No context manager is registered: repr passes every span's parent
 * explicitly, because an action's phases run long after, and apart from, the
 * call that queued it, where an implicit "active span" would name the wrong
 * parent (whichever call happened to trigger the dispatch).
 */
export async function startTracing(config: TracingConfig, log: Logger): Promise<Tracing> {
  const [{ BasicTracerProvider, BatchSpanProcessor, ParentBasedSampler, TraceIdRatioBasedSampler }, { OTLPTraceExporter }, { resourceFromAttributes }, core] =
    await Promise.all([
      import('@opentelemetry/sdk-trace-base'),
      import('@opentelemetry/exporter-trace-otlp-proto'),
      import('@opentelemetry/resources'),
      import('@opentelemetry/core'),
    ]);
  const provider = new BasicTracerProvider({
    resource: resourceFromAttributes({ 'service.name': config.serviceName }),
    // A client's decision (the sampled flag of its traceparent) wins, so a trace is never cut in half.
    sampler: new ParentBasedSampler({ root: new TraceIdRatioBasedSampler(config.sampleRatio) }),
    spanProcessors: [new BatchSpanProcessor(new OTLPTraceExporter({ url: config.tracesUrl }))],
  });
  // The SDK reports failed exports only through its diagnostics logger: an
  // endpoint that is down or wrong must show up in repr's log.
  const tlog = log.child({ svc: 'tracing' });
  const say = (message: string, ...args: unknown[]) => tlog.warn({ detail: args.map(String).join(' ') || undefined }, message);
  diag.setLogger({ error: say, warn: say, info: () => undefined, debug: () => undefined, verbose: () => undefined }, DiagLogLevel.WARN);
  trace.setGlobalTracerProvider(provider);
  propagation.setGlobalPropagator(new core.W3CTraceContextPropagator());
  setTracer(provider.getTracer(SCOPE));
  log.info({ endpoint: config.tracesUrl, serviceName: config.serviceName, sampleRatio: config.sampleRatio }, 'tracing on: spans go to OTLP/HTTP');
  let stopped: Promise<void> | undefined;
  return {
    shutdown: () => {
      stopped ??= (async () => {
        setTracer(undefined);
        try {
          await provider.shutdown();
        } catch (e) {
          // Spans are worth a warning, never a failed shutdown.
          log.warn({ err: e, endpoint: config.tracesUrl }, 'could not send the last spans');
        }
        trace.disable();
        propagation.disable();
        diag.disable();
      })();
      return stopped;
    },
  };
}
