import os from 'node:os';
import path from 'node:path';
import { z } from 'zod';
import { postgresAcStore, type StoreConfig } from '../storage/store-config.js';
import { authSchema } from '../grpc/auth-config.js';
import { telemetrySinkSchema } from '../observability/telemetry-config.js';
import { resolveTracing, type TracingConfig, tracingSchema } from '../observability/tracing-config.js';
import { invalidArgument } from '../common/errors.js';
import { executorFields } from './execution-schema.js';
import { autoscaleSchema } from './autoscale-config.js';
import { byteSize, logFormat, logLevel, parseConfig } from './schema.js';
import { actionCacheProblem, casProblem, defaultAcStore, defaultCasStore, storeSchema, verifiedCas } from './store-schema.js';

export { loadConfigFile } from './schema.js';

const GiB = 1024 ** 3;
const MiB = 1024 ** 2;

export function defaultDataDir(): string {
  return process.env.REPR_DATA_DIR ?? path.join(os.homedir(), '.local', 'share', 'repr');
}

const serverSchema = z
  .object({
    /** host:port for the gRPC server. Port 0 picks a free port (tests). */
    listen: z.string().default('127.0.0.1:8980'),
    dataDir: z.string().default(() => defaultDataDir()),
    /**
     * Instance names this server answers for. Empty means any name. The CAS is
     * shared by all instances (content addressing makes that safe); action
     * cache entries are kept apart per instance name.
     */
    instanceNames: z.array(z.string()).default([]),
    storage: z
      .object({
        cas: storeSchema.optional(),
        ac: storeSchema.optional(),
      })
      .strict()
      .default({}),
    /** Largest total request or response of a Batch* call (and the gRPC message limit). */
    maxBatchTotalSizeBytes: byteSize.default(4 * MiB),
    /**
     * Largest blob the CAS accepts (advertised as max_cas_blob_size_bytes).
     * Under half the default disk store, so one blob cannot flush the cache.
     */
    maxBlobSizeBytes: byteSize.default(4 * GiB),
    /** ByteStream uploads in progress, including interrupted ones kept for resumption. */
    uploads: z
      .object({
        maxCount: z.number().int().positive().default(1000),
        /** Bound on the sum of the declared sizes of uploads in progress. */
        maxBytes: byteSize.default(8 * GiB),
        /** An upload that receives nothing for this long is dropped, whether or not its call is still open. */
        idleSeconds: z.number().positive().default(60),
      })
      .strict()
      .default({}),
    logLevel: logLevel.default('info'),
    logFormat: logFormat.default('auto'),
    /** Where each `repr run`'s telemetry goes (plugins: log, jsonl, prometheus). */
    telemetry: z.array(telemetrySinkSchema).default([{ type: 'log' }, { type: 'prometheus' }]),
    /** OpenTelemetry tracing of calls and action phases, sent by OTLP/HTTP; off unless an endpoint is set here or in OTEL_EXPORTER_OTLP_*. */
    tracing: tracingSchema,
    /** host:port for an HTTP server with /metrics (Prometheus) and /healthz; off when unset. */
    metricsListen: z.string().optional(),
    /** TLS on the gRPC port and the metrics endpoint; plaintext when unset. */
    tls: z
      .object({
        certFile: z.string({ required_error: 'missing; the PEM certificate to serve (--tls-cert)' }).min(1),
        keyFile: z.string({ required_error: "missing; the certificate's PEM private key (--tls-key)" }).min(1),
        /** Every client must then present a certificate that chains to one of these CAs (mTLS). */
        clientCaFile: z.string().min(1).optional(),
        /** How often the files are looked at for a rotated certificate, taken without a restart. */
        reloadIntervalSeconds: z.number().positive().default(10),
        /** Ask metrics scrapers for a client certificate too (needs clientCaFile); most scrapers have none. */
        metricsRequireClientCert: z.boolean().default(false),
      })
      .strict()
      .optional(),
    /**
     * Who may call the server and what each caller may do: authenticators
     * (tokens, jwt, mtls), anonymous access, roles and grants. Empty: everyone
     * is the anonymous admin, as befits a server on loopback.
     */
    auth: authSchema.default({}),
    /**
     * Where the scheduler keeps its queue and operations: `sqlite`, a file
     * under dataDir, for one scheduler; or a PostgreSQL database
     * (postgres://USER@HOST:PORT/DB) that any number of schedulers share.
     */
    state: z
      .object({
        url: z
          .string()
          .default('sqlite')
          .refine((u) => u === 'sqlite' || /^postgres(ql)?:\/\/./.test(u), {
            message: 'is neither sqlite nor a postgres://USER@HOST:PORT/DATABASE URL',
          }),
        /** A scheduler whose heartbeat is this late is taken for dead; the others put its executions back in line. */
        schedulerExpirySeconds: z.number().positive().max(3600).default(10),
        /** The address other schedulers and `repr status` show for this one; default the listening address. */
        advertise: z.string().min(1).optional(),
      })
      .strict()
      .default({}),
    execution: z
      .object({
        /** false makes the server a cache only: no Execution service, no scheduler. */
        enabled: z.boolean().default(true),
        /** A worker that sends no heartbeat for this long is dropped and its actions run elsewhere. */
        workerHeartbeatTimeoutSeconds: z.number().positive().default(10),
        /** How long actions needing the properties of a worker that left wait for it to come back before failing. */
        departedWorkerGraceSeconds: z.number().nonnegative().default(60),
        /** Executors one worker may register; each is a slot the scheduler keeps, so a worker cannot ask for millions. */
        maxExecutorsPerWorker: z.number().int().positive().default(1024),
        /** Workers connected at once; more are refused with RESOURCE_EXHAUSTED. */
        maxWorkers: z.number().int().positive().default(256),
        ...executorFields,
      })
      .strict()
      .default({}),
    /** Worker pools this server grows and shrinks with their load (README: Autoscaling). */
    autoscale: autoscaleSchema,
  })
  .strict();

export type ServerConfigInput = z.input<typeof serverSchema>;

export interface ServerConfig extends Omit<z.output<typeof serverSchema>, 'storage' | 'tracing'> {
  storage: { cas: StoreConfig; ac: StoreConfig };
  /** Absent: tracing is off. */
  tracing?: TracingConfig;
}

/**
 * Schedulers sharing a PostgreSQL database keep the action cache there too by
 * default: every one of them must see every result, and the database is the
 * one store they already share and operate.
 */
function defaultActionCache(stateUrl: string, dataDir: string): StoreConfig {
  return stateUrl === 'sqlite' ? defaultAcStore(dataDir) : postgresAcStore(stateUrl);
}

/** Fills in defaults and validates; storage defaults live under `dataDir`. */
export function compileServerConfig(input: unknown): ServerConfig {
  const c = parseConfig(serverSchema, input);
  if (c.uploads.maxBytes < c.maxBlobSizeBytes) {
    throw invalidArgument(
      `invalid configuration: uploads.maxBytes (${c.uploads.maxBytes}) must be at least maxBlobSizeBytes (${c.maxBlobSizeBytes}), or the largest blobs could never be uploaded`,
    );
  }
  if (c.tls?.metricsRequireClientCert && !c.tls.clientCaFile) {
    throw invalidArgument('invalid configuration: tls.metricsRequireClientCert needs tls.clientCaFile, the CA client certificates are checked against');
  }
  if (c.auth.mtls && !c.tls?.clientCaFile) {
    // Without a client CA the server never asks for certificates, so no caller could be named by one.
    throw invalidArgument('invalid configuration: auth.mtls needs tls.clientCaFile (--tls-client-ca), which makes clients present certificates');
  }
  if (c.autoscale.enabled && !c.execution.enabled) {
    throw invalidArgument(
      'invalid configuration: autoscale.enabled needs execution.enabled: a cache-only server has no scheduler whose load could grow a pool',
    );
  }
  const acProblem = c.storage.ac && actionCacheProblem(c.storage.ac);
  if (acProblem) throw invalidArgument(`invalid configuration: storage.ac: ${acProblem}`);
  const casStoreProblem = c.storage.cas && casProblem(c.storage.cas);
  if (casStoreProblem) throw invalidArgument(`invalid configuration: storage.cas: ${casStoreProblem}`);
  const { tracing: tracingInput, ...rest } = c;
  const tracing = resolveTracing(tracingInput, 'repr-server');
  return {
    ...rest,
    ...(tracing ? { tracing } : {}),
    storage: {
      cas: c.storage.cas ? verifiedCas(c.storage.cas) : defaultCasStore(c.dataDir),
      ac: c.storage.ac ?? defaultActionCache(c.state.url, c.dataDir),
    },
  };
}
