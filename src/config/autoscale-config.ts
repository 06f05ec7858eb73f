import { z } from 'zod';
import type { PolicyConfig } from '../autoscale/autoscale.js';
import { checkKubernetesProvider, kubernetesProviderObject } from './autoscale-kubernetes-schema.js';
import { policySchema } from './autoscale-schema.js';

/** Pool names go into worker names (`<pool>-<n>`) and commands: kept to what is safe in both. */
const POOL_NAME = /^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$/;

const processProvider = z
  .object({
    type: z.literal('process'),
    /** Executors of each worker started (`repr worker --executors`). */
    executors: z.number().int().positive().max(1024).default(1),
    /** More `repr worker` flags, e.g. a token or TLS files for a server that needs them. */
    workerArgs: z.array(z.string()).default([]),
    /** Given to each worker as --drain-timeout; SIGKILL follows if it is still there a little after. */
    drainTimeoutSeconds: z.number().positive().max(86_400).default(60),
  })
  .strict();

const commandProvider = z
  .object({
    type: z.literal('command'),
    /** argv adding workers: `{count}` and `{pool}` are replaced in any item; an item `{names}` becomes the new workers' names. */
    add: z.array(z.string()).min(1, 'add must be an argv array, e.g. ["gcloud", "…", "--count", "{count}"]'),
    /** argv stopping workers; its item `{names}` becomes one item per worker name. */
    remove: z
      .array(z.string())
      .min(1, 'remove must be an argv array with a "{names}" item')
      .refine((a) => a.includes('{names}'), 'remove needs an item "{names}" (one argv item per worker to stop)'),
    /** Each command is killed after this long. */
    timeoutSeconds: z.number().positive().max(3600).default(300),
    /** How many workers it brings each (executorsPerWorker of the policy, when that is not given). */
    executors: z.number().int().positive().max(10_000).optional(),
  })
  .strict();

const providerSchema = z
  .discriminatedUnion('type', [processProvider, commandProvider, kubernetesProviderObject], {
    errorMap: (issue, ctx) => ({
      message: issue.code === 'invalid_union_discriminator' ? "provider.type must be 'process', 'command' or 'kubernetes'" : ctx.defaultError,
    }),
  })
  // A discriminated union takes plain objects only: the kubernetes provider's cross-field rule is checked here.
  .superRefine((p, ctx) => {
    if (p.type === 'kubernetes') checkKubernetesProvider(p, ctx);
  });

export type ProviderConfig = z.output<typeof providerSchema>;

const POOL_FIELDS = ['name', 'properties', 'provider'] as const;

/** One pool: its name, the properties its workers declare, its provider, and the policy's fields beside them. */
const poolSchema = z
  .object({
    name: z.string().regex(POOL_NAME, 'name must be 1 to 32 lowercase letters, digits or dashes (workers are named <name>-<n>)'),
    /** The platform properties the pool's workers declare; actions whose requirements these meet grow it. */
    properties: z.record(z.union([z.string(), z.array(z.string())])).default({ OSFamily: 'linux' }),
    provider: providerSchema,
  })
  .catchall(z.unknown())
  .transform((p, ctx) => {
    const rest = Object.fromEntries(Object.entries(p).filter(([k]) => !(POOL_FIELDS as readonly string[]).includes(k)));
    const executors = p.provider.executors;
    const policy = policySchema.safeParse({ ...(executors !== undefined ? { executorsPerWorker: executors } : {}), ...rest });
    if (!policy.success) {
      for (const issue of policy.error.issues) ctx.addIssue({ ...issue, path: issue.path });
      return z.NEVER;
    }
    const properties = Object.fromEntries(Object.entries(p.properties).map(([k, v]) => [k, Array.isArray(v) ? v : [v]]));
    return { name: p.name, properties, provider: p.provider, policy: policy.data as PolicyConfig };
  });

export type AutoscalePoolConfig = z.output<typeof poolSchema>;

/** `autoscale` in the server's config: off unless enabled, with at least one pool then. */
export const autoscaleSchema = z
  .object({
    enabled: z.boolean().default(false),
    /** How often each pool is sampled and decided on. */
    tickSeconds: z.number().min(0.1).max(3600).default(5),
    pools: z.array(poolSchema).default([]),
  })
  .strict()
  .superRefine((a, ctx) => {
    if (a.enabled && a.pools.length === 0) ctx.addIssue({ code: z.ZodIssueCode.custom, path: ['pools'], message: 'autoscale is enabled but has no pools' });
    // A pool's workers are those named <pool>-…: no name may be another's prefix that way, or one pool would count the other's workers.
    for (const [i, p] of a.pools.entries()) {
      const other = a.pools.find((q, j) => j !== i && (q.name === p.name || p.name.startsWith(`${q.name}-`)));
      if (other)
        ctx.addIssue({
          code: z.ZodIssueCode.custom,
          path: ['pools', i, 'name'],
          message: `pool name ${p.name} clashes with pool ${other.name}: workers are told apart by the prefix <pool>-`,
        });
    }
  })
  .default({});
