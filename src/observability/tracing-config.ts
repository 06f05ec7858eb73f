import { z } from 'zod';
import { invalidArgument } from '../common/errors.js';

// Apart from tracing.ts, so that reading a config loads no OpenTelemetry SDK.

const httpUrl = z
  .string()
  .min(1)
  .refine((v) => isHttpUrl(v), { message: 'must be an http:// or https:// URL, e.g. http://localhost:4318 (--otlp-endpoint)' });

/** The `tracing` field of the server's and the worker's config; tracing stays off without an endpoint. */
export const tracingSchema = z
  .object({
    /**
     * The OTLP/HTTP receiver (an OpenTelemetry collector, Jaeger, Tempo …),
     * as OTEL_EXPORTER_OTLP_ENDPOINT takes it: spans are posted to its
     * /v1/traces, protobuf-encoded.
     */
    otlpEndpoint: httpUrl.optional(),
    /** service.name of every span; default $OTEL_SERVICE_NAME, else repr-server or repr-worker. */
    serviceName: z.string().min(1).optional(),
    /** The share of new traces recorded (0 to 1); a client's sampled flag is followed either way. */
    sampleRatio: z.number().min(0).max(1).default(1),
  })
  .strict()
  .default({});

export type TracingInput = z.output<typeof tracingSchema>;

/** What starting tracing needs; absent when tracing is off. */
export interface TracingConfig {
  /** As configured, or as the environment variable said. */
  otlpEndpoint: string;
  /** Full URL spans are posted to. */
  tracesUrl: string;
  serviceName: string;
  sampleRatio: number;
}

function isHttpUrl(v: string): boolean {
  try {
    const u = new URL(v);
    return u.protocol === 'http:' || u.protocol === 'https:';
  } catch {
    return false;
  }
}

/** `${base}/v1/traces`, as the OTLP exporter specification builds the traces URL from a base endpoint. */
function tracesUrlOf(base: string): string {
  return `${base.replace(/\/+$/, '')}/v1/traces`;
}

/**
 * The tracing a process runs with: the config's endpoint, else the standard
 * OTEL_EXPORTER_OTLP_TRACES_ENDPOINT (the traces URL itself) or
 * OTEL_EXPORTER_OTLP_ENDPOINT (a base URL); undefined (off) when none is
 * set or OTEL_SDK_DISABLED is true.
 */
export function resolveTracing(given: TracingInput, defaultServiceName: string, env: NodeJS.ProcessEnv = process.env): TracingConfig | undefined {
  if (env.OTEL_SDK_DISABLED?.trim().toLowerCase() === 'true') return undefined;
  let tracesUrl: string | undefined;
  let otlpEndpoint = given.otlpEndpoint;
  if (otlpEndpoint) tracesUrl = tracesUrlOf(otlpEndpoint);
  else {
    for (const [name, toUrl] of [
      ['OTEL_EXPORTER_OTLP_TRACES_ENDPOINT', (v: string) => v],
      ['OTEL_EXPORTER_OTLP_ENDPOINT', tracesUrlOf],
    ] as const) {
      const v = env[name]?.trim();
      if (!v) continue;
      if (!isHttpUrl(v)) throw invalidArgument(`${name}="${v}" is not an http:// or https:// URL; fix it, or unset it and use --otlp-endpoint`);
      otlpEndpoint = v;
      tracesUrl = toUrl(v);
      break;
    }
  }
  if (!tracesUrl || !otlpEndpoint) return undefined;
  return { otlpEndpoint, tracesUrl, serviceName: given.serviceName ?? (env.OTEL_SERVICE_NAME?.trim() || defaultServiceName), sampleRatio: given.sampleRatio };
}
