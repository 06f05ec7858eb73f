import type { ServerUnaryCall, ServerWritableStream, ServiceDefinition, UntypedServiceImplementation } from '@grpc/grpc-js';
import { service as healthDefinition } from 'grpc-health-check';
import { notFound } from '../common/errors.js';
import type { Logger } from '../common/logger.js';
import { unary } from '../grpc/handlers.js';

type ServingStatus = 'SERVING' | 'NOT_SERVING' | 'SERVICE_UNKNOWN';
interface CheckRequest {
  service: string;
}
interface CheckResponse {
  status: ServingStatus;
}

/**
 * The standard gRPC health service (grpc.health.v1.Health): "" for the
 * server as a whole and each served service by its full name, all SERVING
 * or all NOT_SERVING together, as the server's readiness says. The
 * definition (and its .proto, for reflection) comes from the
 * grpc-health-check package; the handlers are ours because its
 * implementation registers itself on the server, past the method-permission
 * check every service goes through here, and keeps Watch streams open
 * forever, which would hold every graceful shutdown for its whole grace
 * period.
 */
export class HealthService {
  private serving = false;
  private readonly services = new Set<string>(['']);
  private readonly watches = new Set<{ service: string; call: ServerWritableStream<CheckRequest, CheckResponse> }>();

  constructor(private readonly log: Logger) {}

  /** Reported under its full name ("package.Service"). */
  addService(name: string): void {
    this.services.add(name);
  }

  setServing(serving: boolean): void {
    if (serving === this.serving) return;
    this.serving = serving;
    for (const w of this.watches) w.call.write({ status: this.statusOf(w.service) });
  }

  /** Ends every Watch, after the last status was queued, so they do not hold the shutdown. */
  close(): void {
    for (const w of this.watches) w.call.end();
    this.watches.clear();
  }

  private statusOf(service: string): ServingStatus {
    if (!this.services.has(service)) return 'SERVICE_UNKNOWN';
    return this.serving ? 'SERVING' : 'NOT_SERVING';
  }

  private check(req: CheckRequest): CheckResponse {
    const status = this.statusOf(req.service);
    if (status === 'SERVICE_UNKNOWN') throw notFound(`service "${req.service}" is not served here; "" asks for the server as a whole`);
    return { status };
  }

  /** Unknown services get SERVICE_UNKNOWN and the stream stays open, as the protocol asks. */
  private watch(call: ServerWritableStream<CheckRequest, CheckResponse>): void {
    const w = { service: call.request.service, call };
    this.watches.add(w);
    call.on('cancelled', () => this.watches.delete(w));
    call.write({ status: this.statusOf(w.service) });
  }

  handlers(): UntypedServiceImplementation {
    return {
      Check: unary(this.log, 'Check', async (req: CheckRequest) => this.check(req)),
      Watch: (call: ServerWritableStream<CheckRequest, CheckResponse>) => this.watch(call),
      List: (_call: ServerUnaryCall<unknown, unknown>, callback: (e: null, r: unknown) => void) =>
        callback(null, { statuses: Object.fromEntries([...this.services].map((s) => [s, { status: this.statusOf(s) }])) }),
    };
  }

  static readonly definition: ServiceDefinition = healthDefinition as unknown as ServiceDefinition;
}
