import os from 'node:os';
import path from 'node:path';
import { z } from 'zod';
import { defaultDataDir } from './config.js';
import { executorFields, propertyLists } from './execution-schema.js';
import { byteSize, grpcTarget, logLevel, parseConfig } from './schema.js';

const GiB = 1024 ** 3;

const workerSchema = z
  .object({
    /** The scheduler: a repr server with execution enabled. */
    scheduler: z.string({ required_error: 'missing; the scheduler to take work from, as grpc://host:port' }).pipe(grpcTarget),
    /** The CAS inputs come from and outputs go to, if not the scheduler's. */
    cas: grpcTarget.optional(),
    /** Unique among the scheduler's workers; stable across reconnects. */
    name: z
      .string()
      .min(1)
      .default(() => `${os.hostname()}-${process.pid}`),
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
    /** On SIGTERM, how long running actions may finish before they are handed back. */
    drainTimeoutSeconds: z.number().positive().default(60),
    logLevel: logLevel.default('info'),
    /** Bearer token for a scheduler (and CAS) that requires one; default $REPR_TOKEN. */
    token: z.string().min(1).optional(),
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

export interface WorkerConfig extends Omit<Parsed, 'dataDir' | 'cache' | 'execution'> {
  dataDir: string;
  cache: { directory: string; limitBytes: number };
  /** Scratch space for input roots: DATADIR/work, emptied at start. */
  workDir: string;
  execution: Omit<Parsed['execution'], 'properties'> & { properties: Record<string, string[]> };
}

/** Fills in defaults and validates `repr worker`'s configuration; paths default under `dataDir`. */
export function compileWorkerConfig(input: unknown): WorkerConfig {
  const c = parseConfig(workerSchema, input);
  const dataDir = c.dataDir ?? path.join(defaultDataDir(), 'workers', c.name.replace(/[^\w.-]/g, '_'));
  const token = c.token ?? (process.env.REPR_TOKEN || undefined);
  return {
    ...c,
    dataDir,
    cache: { directory: c.cache.directory ?? path.join(dataDir, 'cas'), limitBytes: c.cache.limitBytes },
    workDir: path.join(dataDir, 'work'),
    ...(token ? { token } : {}),
    execution: { ...c.execution, properties: propertyLists(c.execution.properties) },
  };
}
