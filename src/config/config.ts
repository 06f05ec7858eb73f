import { readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { z } from 'zod';
import { parseByteSize } from '../common/units.js';
import type { StoreConfig } from '../storage/store-config.js';

import { authSchema } from '../grpc/auth.js';
import { telemetrySinkSchema } from '../observability/telemetry-config.js';
import { invalidArgument } from '../common/errors.js';

const GiB = 1024 ** 3;
const MiB = 1024 ** 2;

/** Sizes may be written as numbers of bytes or as strings like "10GiB", "512MB". */
const byteSize = z.union([z.number().int().nonnegative(), z.string()]).transform((v, ctx) => {
  if (typeof v === 'number') return v;
  const n = parseByteSize(v);
  if (n === undefined) {
    ctx.addIssue({ code: z.ZodIssueCode.custom, message: `"${v}" is not a size (e.g. 1048576, "512MiB", "10GiB")` });
    return z.NEVER;
  }
  return n;
});

// A tree of stores: backends at the leaves, decorators wrapping them.
const storeSchema: z.ZodType<StoreConfig, z.ZodTypeDef, unknown> = z.lazy(() =>
  z.discriminatedUnion('type', [
    z.object({ type: z.literal('memory'), limitBytes: byteSize.default(256 * MiB) }).strict(),
    z.object({ type: z.literal('disk'), directory: z.string().min(1), limitBytes: byteSize.default(10 * GiB), fsync: z.boolean().default(false) }).strict(),
    z.object({ type: z.literal('read-caching'), fast: storeSchema, slow: storeSchema, maxBlobBytes: byteSize.default(16 * MiB) }).strict(),
    // Another REAPI server's CAS (grpc://host:port): a scheduler and its
    // workers can share one CAS that runs elsewhere.
    z.object({ type: z.literal('remote'), target: z.string().min(1), instanceName: z.string().default('') }).strict(),
  ]),
);

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
    logLevel: z.enum(['trace', 'debug', 'info', 'warn', 'error', 'silent']).default('info'),
    /** Where each `repr run`'s telemetry goes (plugins: log, jsonl, prometheus). */
    telemetry: z.array(telemetrySinkSchema).default([{ type: 'log' }, { type: 'prometheus' }]),
    /** host:port for an HTTP server with /metrics (Prometheus) and /healthz; off when unset. */
    metricsListen: z.string().optional(),
    /** Who may call the server (plugins: none, token). */
    auth: authSchema.default({ type: 'none' }),
    execution: z
      .object({
        /** false makes the server a cache only: no Execution service, no scheduler. */
        enabled: z.boolean().default(true),
        /** Executors run in this process; 0 makes a pure scheduler that only external workers (`repr worker`) serve. */
        executors: z.number().int().nonnegative().default(() => os.cpus().length),
        /** A worker that sends no heartbeat for this long is dropped and its actions run elsewhere. */
        workerHeartbeatTimeoutSeconds: z.number().positive().default(10),
        /** How long actions needing the properties of a worker that left wait for it to come back before failing. */
        departedWorkerGraceSeconds: z.number().nonnegative().default(60),
        /** Executors one worker may register; each is a slot the scheduler keeps, so a worker cannot ask for millions. */
        maxExecutorsPerWorker: z.number().int().positive().default(1024),
        /** Workers connected at once; more are refused with RESOURCE_EXHAUSTED. */
        maxWorkers: z.number().int().positive().default(256),
        /** Platform properties every local executor offers (matched exactly). */
        properties: z.record(z.union([z.string(), z.array(z.string())])).default({ OSFamily: 'linux' }),
        /** Cores and memory an action may ask for at most (EngFlow-style cpu/memory properties). */
        cpus: z.number().positive().default(() => os.cpus().length),
        memoryBytes: byteSize.default(() => os.totalmem()),
        /** Whether actions may ask for the host network (network=on). */
        allowNetwork: z.boolean().default(false),
        defaultTimeoutSeconds: z.number().positive().max(2_000_000).default(900),
        /** Capped so that it fits a Node timer (about 24.8 days); longer would fire at once. */
        maxTimeoutSeconds: z.number().positive().max(2_000_000).default(3600),
        /** Bounds on an action's input root, counted before it is staged (a small tree in the CAS can expand exponentially). */
        maxInputNodes: z.number().int().positive().default(1_000_000),
        maxInputBytes: byteSize.default(64 * GiB),
        maxInputDepth: z.number().int().positive().max(4096).default(512),
        /** Host paths visible read-only in the sandbox; default: the toolchain (/usr, /bin, /lib*, parts of /etc). */
        readOnlyPaths: z.array(z.string()).optional(),
        /** The sandbox's own limits and hardening; unset fields keep BwrapSandbox's defaults (see BwrapSandboxOptions). */
        sandbox: z
          .object({
            defaultMemoryBytes: byteSize.optional(),
            maxStdoutBytes: byteSize.optional(),
            maxStderrBytes: byteSize.optional(),
            maxWriteBytes: byteSize.optional(),
            maxWriteEntries: z.number().int().nonnegative().optional(),
            tmpBytes: byteSize.optional(),
            seccomp: z.boolean().optional(),
            allowPtrace: z.boolean().optional(),
            disableUserns: z.boolean().optional(),
          })
          .strict()
          .default({}),
      })
      .strict()
      .default({}),
  })
  .strict();

export type ServerConfigInput = z.input<typeof serverSchema>;

export interface ServerConfig extends Omit<z.output<typeof serverSchema>, 'storage'> {
  storage: { cas: StoreConfig; ac: StoreConfig };
}

/** Fills in defaults and validates; storage defaults live under `dataDir`. */
export function compileServerConfig(input: unknown): ServerConfig {
  const parsed = serverSchema.safeParse(input ?? {});
  if (!parsed.success) {
    const msg = parsed.error.issues.map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`).join('; ');
    throw invalidArgument(`invalid configuration: ${msg}`);
  }
  const c = parsed.data;
  if (c.uploads.maxBytes < c.maxBlobSizeBytes) {
    throw invalidArgument(`invalid configuration: uploads.maxBytes (${c.uploads.maxBytes}) must be at least maxBlobSizeBytes (${c.maxBlobSizeBytes}), or the largest blobs could never be uploaded`);
  }
  if (c.storage.ac && usesRemote(c.storage.ac)) {
    throw invalidArgument('invalid configuration: storage.ac: a remote store is a CAS, and action-cache entries are not content-addressed; keep the action cache local');
  }
  return {
    ...c,
    storage: {
      cas: c.storage.cas ?? {
        type: 'read-caching',
        maxBlobBytes: 16 * MiB,
        fast: { type: 'memory', limitBytes: 256 * MiB },
        slow: { type: 'disk', directory: path.join(c.dataDir, 'cas'), limitBytes: 10 * GiB, fsync: false },
      },
      ac: c.storage.ac ?? {
        type: 'read-caching',
        maxBlobBytes: 1 * MiB,
        fast: { type: 'memory', limitBytes: 64 * MiB },
        slow: { type: 'disk', directory: path.join(c.dataDir, 'ac'), limitBytes: 1 * GiB, fsync: false },
      },
    },
  };
}

function usesRemote(s: StoreConfig): boolean {
  return s.type === 'remote' || (s.type === 'read-caching' && (usesRemote(s.fast) || usesRemote(s.slow)));
}

export function loadConfigFile(file: string): unknown {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    throw invalidArgument(`cannot read config file ${file}: ${(e as Error).message}`);
  }
  try {
    return JSON.parse(text);
  } catch (e) {
    throw invalidArgument(`config file ${file} is not valid JSON: ${(e as Error).message}`);
  }
}
