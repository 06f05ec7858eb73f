import { z } from 'zod';
import type { KubernetesProviderConfig } from '../autoscale/kubernetes-provider.js';

export type { KubernetesProviderConfig } from '../autoscale/kubernetes-provider.js';

// Kubernetes object names are DNS-1123 labels or subdomains; checking here
// turns a typo into a config error at start rather than a 404 at the first scale-up.
const DNS_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const DNS_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;

const namespace = z.string().max(63).regex(DNS_LABEL, 'must be a Kubernetes namespace name (lower-case letters, digits and -)');
const objectName = z.string().max(253).regex(DNS_SUBDOMAIN, 'must be a Kubernetes object name (lower-case letters, digits, - and .)');
const kind = z.enum(['StatefulSet', 'Deployment']);

/**
 * An autoscale pool's `provider` when it is `{"type": "kubernetes", ...}`. A
 * plain object (refinements apart) so that the autoscale schema can put it
 * in a discriminated union on `type`.
 */
export const kubernetesProviderObject = z
  .object({
    type: z.literal('kubernetes'),
    namespace: namespace.default('default'),
    kind: kind.default('StatefulSet'),
    name: objectName,
    kubeconfig: z.string().min(1).optional(),
    inCluster: z.boolean().optional(),
    pools: z.record(z.string(), z.object({ name: objectName, kind: kind.optional(), namespace: namespace.optional() }).strict()).optional(),
    requestTimeoutSeconds: z.number().positive().max(600).default(30),
    /** Executors each pod's worker runs (its --executors): the pool's executorsPerWorker when that is not given, as for the other providers. */
    executors: z.number().int().positive().max(10_000).optional(),
  })
  .strict();

/** The rule across fields that the plain object cannot carry (a union member must stay a plain object). */
export function checkKubernetesProvider(c: z.output<typeof kubernetesProviderObject>, ctx: z.RefinementCtx): void {
  if (c.kubeconfig !== undefined && c.inCluster) {
    ctx.addIssue({ code: z.ZodIssueCode.custom, path: ['inCluster'], message: 'give kubeconfig or inCluster, not both' });
  }
}

export const kubernetesProviderSchema = kubernetesProviderObject.superRefine(checkKubernetesProvider);

export type KubernetesProviderInput = z.input<typeof kubernetesProviderObject>;

/** What the controller hands to KubernetesProvider.create(). */
export function toKubernetesProviderConfig(parsed: z.output<typeof kubernetesProviderObject>): KubernetesProviderConfig {
  const { type: _type, executors: _executors, ...config } = parsed;
  return config;
}
