import os from 'node:os';
import path from 'node:path';
import { z } from 'zod';
import { defaultDataDir } from './config.js';
import { executorFields, propertyLists } from './execution-schema.js';
import { invalidArgument } from '../common/errors.js';
import { isTlsTarget } from '../grpc/dial.js';
import { resolveTracing, type TracingConfig, tracingSchema } from '../observability/tracing-config.js';
import { byteSize, clientTls, grpcTarget, logFormat, logLevel, parseConfig, withTlsEnv } from './schema.js';

const GiB = 1024 ** 3;

const SCHEDULER_FORM = 'the scheduler to take work from, as grpc://host:port (several: a list, or separated by commas)';

/**
 * Every scheduler, each checked as a single one is. All grpcs:// or all
 * grpc://: a worker that fell over from a TLS scheduler to a plaintext one
 * would send its token and every action's inputs and outputs in the clear,
 * and anyone able to make the TLS ones unreachable could make it do so.
 */
const schedulerList = z
  .union([z.string(), z.array(z.string())], {
    errorMap: (_issue, ctx) => ({
      message: ctx.data === undefined ? `missing; ${SCHEDULER_FORM}` : `expected ${SCHEDULER_FORM}`,
    }),
  })
  .transform((v, ctx) => {
    const entries = (Array.isArray(v) ? v : [v]).flatMap((e) => e.split(',')).map((e) => e.trim());
    if (entries.every((e) => e === '')) {
      ctx.addIssue({ code: z.ZodIssueCode.custom, message: `empty; ${SCHEDULER_FORM}` });
      return z.NEVER;
    }
    const targets: string[] = [];
    for (const entry of entries.filter((e) => e !== '')) {
      const parsed = grpcTarget.safeParse(entry);
      if (!parsed.success) {
        for (const issue of parsed.error.issues) ctx.addIssue({ code: z.ZodIssueCode.custom, message: issue.message });
        return z.NEVER;
      }
      if (!targets.includes(parsed.data)) targets.push(parsed.data);
    }
    const tls = targets.filter((t) => isTlsTarget(t));
    if (tls.length > 0 && tls.length < targets.length) {
      ctx.addIssue({
        code: z.ZodIssueCode.custom,
        message: `mixes grpcs:// (${tls.join(', ')}) and plaintext (${targets.filter((t) => !isTlsTarget(t)).join(', ')}) schedulers; a worker falling over to a plaintext one would send its token and actions in the clear: make them all grpcs:// or all grpc://`,
      });
      return z.NEVER;
    }
    return targets;
  });

const workerSchema = z
  .object({
    /**
     * The schedulers: repr servers with execution enabled, sharing their
     * queue. One address, a list, or addresses separated by commas; a name
     * may resolve to several. The worker takes work from one at a time.
     */
    scheduler: schedulerList,
    /** The CAS inputs come from and outputs go to, if not the scheduler's. */
    cas: grpcTarget.optional(),
    /**
     * Unique among the scheduler's workers; stable across reconnects. The
     * host name by default, so that a restarted worker finds its cache again.
     */
    name: z
      .string()
      .min(1)
      .default(() => os.hostname()),
    /** The local CAS cache and scratch space; default $REPR_DATA_DIR/workers/NAME. */
    dataDir: z.string().min(1).optional(),
    /** The local CAS cache every input is linked from: LRU, verified on the way in. */
    cache: z
      .object({
        /** Default DATADIR/cas. */
        directory: z.string().min(1).optional(),
        limitBytes: byteSize.default(10 * GiB),
      })
      .strict()
      .default({}),
    /**
     * Other workers' directories under $REPR_DATA_DIR/workers (a renamed or
     * retired worker's cache) unused for this many days are removed at
     * start; 0 keeps them. Only with the default data directory layout.
     */
    staleDays: z.number().int().nonnegative().default(7),
    /** On SIGTERM, how long running actions may finish before they are handed back. */
    drainTimeoutSeconds: z.number().positive().default(60),
    logLevel: logLevel.default('info'),
    logFormat: logFormat.default('auto'),
    /** Bearer token for a scheduler (and CAS) that requires one; default $REPR_TOKEN. */
    token: z.string().min(1).optional(),
    /** How the scheduler and the CAS are dialled when they are grpcs://; each file defaults to $REPR_TLS_CA, $REPR_TLS_CERT, $REPR_TLS_KEY. */
    tls: clientTls.optional(),
    /** OpenTelemetry tracing of the actions this worker executes, joined to the scheduler's traces; as the server's. */
    tracing: tracingSchema,
    execution: z
      .object({
        ...executorFields,
        /** Where `repr run`s write: an overlayfs layer on disk, or through FUSE. */
        runWrites: z.enum(['overlay', 'fuse']).default('overlay'),
      })
      .strict()
      .default({}),
  })
  .strict();

export type WorkerConfigInput = z.input<typeof workerSchema>;

type Parsed = z.output<typeof workerSchema>;

export interface WorkerConfig extends Omit<Parsed, 'dataDir' | 'cache' | 'execution' | 'tracing'> {
  /** Absent: tracing is off. */
  tracing?: TracingConfig;
  dataDir: string;
  cache: { directory: string; limitBytes: number };
  /** Scratch space for input roots: DATADIR/work, emptied at start. */
  workDir: string;
  /** Where other workers' directories are swept for staleness: $REPR_DATA_DIR/workers, when DATADIR is in it. */
  workersDir?: string;
  execution: Omit<Parsed['execution'], 'properties'> & { properties: Record<string, string[]> };
}

/** Fills in defaults and validates `repr worker`'s configuration; paths default under `dataDir`. */
export function compileWorkerConfig(input: unknown): WorkerConfig {
  const c = parseConfig(workerSchema, input);
  const workersDir = path.join(defaultDataDir(), 'workers');
  const dataDir = c.dataDir ?? path.join(workersDir, c.name.replace(/[^\w.-]/g, '_'));
  const token = c.token ?? (process.env.REPR_TOKEN || undefined);
  // Given here or by flag, TLS settings that no channel would use are a mistake;
  // from the environment they are defaults for whichever channel is grpcs://.
  if (c.tls && !isTlsTarget(c.scheduler[0]!) && !(c.cas && isTlsTarget(c.cas))) {
    throw invalidArgument('invalid configuration: tls is set, but neither scheduler nor cas is a grpcs:// address; use grpcs:// to dial with TLS');
  }
  const tls = withTlsEnv(c.tls);
  const { tracing: tracingInput, ...rest } = c;
  const tracing = resolveTracing(tracingInput, 'repr-worker');
  return {
    ...rest,
    ...(tracing ? { tracing } : {}),
    dataDir,
    cache: { directory: c.cache.directory ?? path.join(dataDir, 'cas'), limitBytes: c.cache.limitBytes },
    workDir: path.join(dataDir, 'work'),
    // A data directory given elsewhere says nothing about what lives beside it.
    ...(path.dirname(path.resolve(dataDir)) === path.resolve(workersDir) ? { workersDir } : {}),
    ...(token ? { token } : {}),
    ...(tls ? { tls } : {}),
    execution: { ...c.execution, properties: propertyLists(c.execution.properties) },
  };
}
