import { once } from 'node:events';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { gunzipSync } from 'node:zlib';
import { BinaryReader } from '@bufbuild/protobuf/wire';

// No real OpenTelemetry collector can be installed on these machines: Debian
// packages none (nor Jaeger, Zipkin or Tempo servers), and npm has exporters
// but no receiver. So tests and benchmarks run this OTLP/HTTP endpoint in
// their own process. It does what a collector's otlphttp receiver does with
// a trace export: takes POST /v1/traces as application/x-protobuf (gzip or
// not), decodes ExportTraceServiceRequest by the field numbers of
// opentelemetry-proto (collector/trace/v1, trace/v1, common/v1), and answers
// with an empty ExportTraceServiceResponse. Anything else gets the status a
// collector gives it, and is counted, so a test sees a malformed export.

/** One span as received, ids in lowercase hex as W3C traceparent writes them. */
export interface ReceivedSpan {
  traceId: string;
  spanId: string;
  /** Empty for a root span. */
  parentSpanId: string;
  name: string;
  /** OTLP SpanKind: 1 internal, 2 server, 3 client. */
  kind: number;
  startNs: bigint;
  endNs: bigint;
  attributes: Record<string, string | number | boolean>;
  /** OTLP status code: 0 unset, 1 ok, 2 error. */
  status: { code: number; message: string };
  /** service.name of the resource that sent it. */
  service: string;
}

export interface OtlpReceiver {
  /** Base URL, as --otlp-endpoint and OTEL_EXPORTER_OTLP_ENDPOINT take it. */
  url: string;
  spans: ReceivedSpan[];
  /** Export requests received, well-formed or not. */
  requests: number;
  /** Requests refused as malformed, with why. */
  rejected: string[];
  /** Resolves once `pred` holds over the spans received (checked on each export), or rejects after `timeoutMs`. */
  waitFor(pred: (spans: ReceivedSpan[]) => boolean, timeoutMs: number): Promise<void>;
  close(): Promise<void>;
}

/** Calls `fn` for each field of a message; `fn` reads the value, or returns false to have it skipped. */
function eachField(bytes: Uint8Array, fn: (field: number, r: BinaryReader) => boolean): void {
  const r = new BinaryReader(bytes);
  while (r.pos < r.len) {
    const [field, wire] = r.tag();
    if (!fn(field, r)) r.skip(wire, field);
  }
}

const hex = (b: Uint8Array) => Buffer.from(b).toString('hex');

/** common.v1.AnyValue, for the scalar kinds spans carry. */
function anyValue(bytes: Uint8Array): string | number | boolean {
  let v: string | number | boolean = '';
  eachField(bytes, (f, r) => {
    if (f === 1) v = r.string();
    else if (f === 2) v = r.bool();
    else if (f === 3) v = Number(r.int64());
    else if (f === 4) v = r.double();
    else return false;
    return true;
  });
  return v;
}

/** common.v1.KeyValue into `into`. */
function keyValue(bytes: Uint8Array, into: Record<string, string | number | boolean>): void {
  let key = '';
  let value: string | number | boolean = '';
  eachField(bytes, (f, r) => {
    if (f === 1) key = r.string();
    else if (f === 2) value = anyValue(r.bytes());
    else return false;
    return true;
  });
  into[key] = value;
}

function span(bytes: Uint8Array, service: string): ReceivedSpan {
  const s: ReceivedSpan = {
    traceId: '',
    spanId: '',
    parentSpanId: '',
    name: '',
    kind: 0,
    startNs: 0n,
    endNs: 0n,
    attributes: {},
    status: { code: 0, message: '' },
    service,
  };
  eachField(bytes, (f, r) => {
    if (f === 1) s.traceId = hex(r.bytes());
    else if (f === 2) s.spanId = hex(r.bytes());
    else if (f === 4) s.parentSpanId = hex(r.bytes());
    else if (f === 5) s.name = r.string();
    else if (f === 6) s.kind = r.int32();
    else if (f === 7) s.startNs = BigInt(r.fixed64());
    else if (f === 8) s.endNs = BigInt(r.fixed64());
    else if (f === 9) keyValue(r.bytes(), s.attributes);
    else if (f === 15)
      eachField(r.bytes(), (sf, sr) => {
        if (sf === 2) s.status.message = sr.string();
        else if (sf === 3) s.status.code = sr.int32();
        else return false;
        return true;
      });
    else return false;
    return true;
  });
  return s;
}

/** collector.trace.v1.ExportTraceServiceRequest: resource_spans → (resource, scope_spans → spans). */
export function decodeTraceExport(body: Uint8Array): ReceivedSpan[] {
  const out: ReceivedSpan[] = [];
  eachField(body, (f, r) => {
    if (f !== 1) return false;
    const resourceSpans = r.bytes();
    const resource: Record<string, string | number | boolean> = {};
    const scopeSpans: Uint8Array[] = [];
    eachField(resourceSpans, (rf, rr) => {
      if (rf === 1) eachField(rr.bytes(), (af, ar) => (af === 1 ? (keyValue(ar.bytes(), resource), true) : false));
      else if (rf === 2) scopeSpans.push(rr.bytes());
      else return false;
      return true;
    });
    const service = String(resource['service.name'] ?? '');
    for (const ss of scopeSpans) eachField(ss, (sf, sr) => (sf === 2 ? (out.push(span(sr.bytes(), service)), true) : false));
    return true;
  });
  return out;
}

/**
 * An OTLP/HTTP trace receiver on loopback: on a port chosen at run time, or
 * on a given one (on 127.0.0.1 and, where the machine has it, ::1, since
 * "localhost" may resolve to either).
 */
export async function startOtlpReceiver(port = 0): Promise<OtlpReceiver> {
  const waiters = new Set<() => void>();
  const handle = (req: http.IncomingMessage, res: http.ServerResponse) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      rx.requests++;
      const refuse = (status: number, why: string) => {
        rx.rejected.push(why);
        res.writeHead(status, { 'content-type': 'text/plain' }).end(why);
      };
      if (req.method !== 'POST' || req.url !== '/v1/traces') return refuse(404, `${req.method} ${req.url}: not an OTLP traces endpoint`);
      if (req.headers['content-type'] !== 'application/x-protobuf') return refuse(415, `content-type ${req.headers['content-type']}`);
      try {
        const raw = Buffer.concat(chunks);
        const body = req.headers['content-encoding'] === 'gzip' ? gunzipSync(raw) : raw;
        rx.spans.push(...decodeTraceExport(body));
      } catch (e) {
        return refuse(400, `undecodable export: ${(e as Error).message}`);
      }
      // An empty ExportTraceServiceResponse: everything accepted.
      res.writeHead(200, { 'content-type': 'application/x-protobuf' }).end();
      for (const w of [...waiters]) w();
    });
  };
  const servers: http.Server[] = [];
  const first = http.createServer(handle).listen(port, '127.0.0.1');
  await once(first, 'listening');
  servers.push(first);
  const bound = (first.address() as AddressInfo).port;
  if (port !== 0) {
    const v6 = http.createServer(handle).listen(bound, '::1');
    try {
      await once(v6, 'listening');
      servers.push(v6);
    } catch (e) {
      // A machine without IPv6 loopback: nothing can reach ::1 there either.
      if ((e as NodeJS.ErrnoException).code !== 'EADDRNOTAVAIL') throw e;
    }
  }
  const rx: OtlpReceiver = {
    url: `http://127.0.0.1:${bound}`,
    spans: [],
    requests: 0,
    rejected: [],
    waitFor: (pred, timeoutMs) =>
      new Promise<void>((resolve, reject) => {
        const check = () => {
          if (!pred(rx.spans)) return;
          waiters.delete(check);
          clearTimeout(timer);
          resolve();
        };
        const timer = setTimeout(() => {
          waiters.delete(check);
          reject(new Error(`spans expected within ${timeoutMs} ms; got: ${rx.spans.map((s) => `${s.service}:${s.name}`).join(', ') || 'none'}`));
        }, timeoutMs);
        waiters.add(check);
        check();
      }),
    close: async () => {
      for (const s of servers) {
        s.closeAllConnections();
        await new Promise<void>((resolve) => s.close(() => resolve()));
      }
    },
  };
  return rx;
}
