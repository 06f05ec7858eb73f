import { z } from 'zod';
import type { PolicyConfig } from '../autoscale/autoscale.js';
import { defaultPolicy } from '../autoscale/policy.js';
import { parseConfig } from './schema.js';

const d = defaultPolicy;
const fraction = (field: string) => z.number().gt(0, `${field} must be in (0, 1]`).lte(1, `${field} must be in (0, 1]`);
const seconds = (field: string) => z.number().nonnegative(`${field} must be ≥ 0 seconds`).max(86_400, `${field} must be at most 86400 seconds (a day)`);

/**
 * One pool's scaling policy; every field optional with the seed's defaults
 * (src/autoscale/policy.ts says why each is what it is). Bounded so that a
 * typo cannot make a pool of a million workers or a policy that flaps.
 */
export const policySchema = z
  .object({
    minWorkers: z
      .number()
      .int('minWorkers must be a whole number')
      .nonnegative('minWorkers must be ≥ 0')
      .max(1000, 'minWorkers must be ≤ 1000')
      .default(d.minWorkers),
    maxWorkers: z
      .number()
      .int('maxWorkers must be a whole number')
      .min(1, 'maxWorkers must be ≥ 1')
      .max(1000, 'maxWorkers must be ≤ 1000')
      .default(d.maxWorkers),
    executorsPerWorker: z
      .number()
      .int('executorsPerWorker must be a whole number')
      .min(1, 'executorsPerWorker must be ≥ 1')
      .max(10_000, 'executorsPerWorker must be ≤ 10000')
      .default(d.executorsPerWorker),
    alpha: fraction('alpha').default(d.alpha),
    trendWindow: z
      .number()
      .int('trendWindow must be a whole number')
      .min(2, 'trendWindow must be ≥ 2 samples (a slope needs two)')
      .max(1000, 'trendWindow must be ≤ 1000')
      .default(d.trendWindow),
    horizonSeconds: z
      .number()
      .positive('horizonSeconds must be > 0')
      .max(86_400, 'horizonSeconds must be at most 86400 seconds (a day)')
      .default(d.horizonSeconds),
    scaleUpThreshold: fraction('scaleUpThreshold').default(d.scaleUpThreshold),
    scaleDownThreshold: fraction('scaleDownThreshold').default(d.scaleDownThreshold),
    targetUtilization: fraction('targetUtilization').default(d.targetUtilization),
    scaleUpCooldownSeconds: seconds('scaleUpCooldownSeconds').default(d.scaleUpCooldownSeconds),
    scaleDownCooldownSeconds: seconds('scaleDownCooldownSeconds').default(d.scaleDownCooldownSeconds),
    maxScaleDownStep: z
      .number()
      .int('maxScaleDownStep must be a whole number')
      .min(1, 'maxScaleDownStep must be ≥ 1')
      .max(1000, 'maxScaleDownStep must be ≤ 1000')
      .default(d.maxScaleDownStep),
    mode: z.enum(['predictive', 'reactive', 'static'], { message: "mode must be 'predictive', 'reactive' or 'static'" }).default(d.mode),
  })
  .strict()
  .superRefine((p, ctx) => {
    const bad = (field: string, message: string) => ctx.addIssue({ code: z.ZodIssueCode.custom, path: [field], message });
    if (p.minWorkers > p.maxWorkers) bad('minWorkers', `minWorkers ${p.minWorkers} is above maxWorkers ${p.maxWorkers}`);
    if (p.scaleDownThreshold >= p.scaleUpThreshold)
      bad(
        'scaleDownThreshold',
        `scaleDownThreshold ${p.scaleDownThreshold} must be below scaleUpThreshold ${p.scaleUpThreshold}, or every tick flips the pool`,
      );
    // Sized above the up threshold, a pool would grow again on the next tick; at or below the down threshold, shrink.
    else if (p.targetUtilization <= p.scaleDownThreshold || p.targetUtilization > p.scaleUpThreshold)
      bad(
        'targetUtilization',
        `targetUtilization ${p.targetUtilization} must be above scaleDownThreshold ${p.scaleDownThreshold} and at most scaleUpThreshold ${p.scaleUpThreshold}`,
      );
  });

export type PolicyInput = z.input<typeof policySchema>;

/** A validated policy with every default filled in; INVALID_ARGUMENT naming each bad field otherwise. */
export function compilePolicy(input: unknown): PolicyConfig {
  return parseConfig(policySchema, input);
}
