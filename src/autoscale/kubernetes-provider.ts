import type { AppsV1Api, CoreV1Api, V1Pod } from '@kubernetes/client-node';
import { type Clock, systemClock } from '../common/clock.js';
import { Code, invalidArgument, ReprError } from '../common/errors.js';
import { type Logger, silentLogger } from '../common/logger.js';
import type { PoolKey, ProvidedWorker, WorkerProvider } from './autoscale.js';

export type WorkloadKind = 'StatefulSet' | 'Deployment';

/** The object whose replica count a pool's size is. */
export interface KubernetesWorkload {
  namespace: string;
  kind: WorkloadKind;
  name: string;
}

/**
 * What the controller builds a KubernetesProvider from (validated by
 * src/config/autoscale-kubernetes-schema.ts, which is above this layer).
 */
export interface KubernetesProviderConfig extends KubernetesWorkload {
  /** A kubeconfig file. Without it and without `inCluster`: $KUBECONFIG, ~/.kube/config, then the pod's service account. */
  kubeconfig?: string;
  /** The service account of the pod the scheduler runs in. */
  inCluster?: boolean;
  /** Pools that scale another workload than the one above, by pool key; `kind` and `namespace` default to the above. */
  pools?: Record<PoolKey, { name: string; kind?: WorkloadKind; namespace?: string }>;
  /** A call the API server has not answered by then fails with UNAVAILABLE, so one hung connection cannot stall the controller. */
  requestTimeoutSeconds: number;
}

/** A worker pod, with its phase (Pending while it is scheduled and its image pulled). */
export interface KubernetesWorker extends ProvidedWorker {
  phase: string;
}

/** One permission the provider uses, as a Role rule spells it. */
export interface RbacRule {
  apiGroup: string;
  resource: string;
  verbs: string[];
}

/**
 * Exactly what the provider calls for a kind of workload: the deploy/ Role
 * is checked against this, and a 403 names the rule that is missing.
 */
export function rbacRules(kind: WorkloadKind): RbacRule[] {
  if (kind === 'StatefulSet') {
    return [
      { apiGroup: 'apps', resource: 'statefulsets/scale', verbs: ['get', 'patch'] },
      { apiGroup: '', resource: 'pods', verbs: ['list'] },
    ];
  }
  return [
    { apiGroup: 'apps', resource: 'deployments/scale', verbs: ['get', 'patch'] },
    { apiGroup: '', resource: 'pods', verbs: ['list', 'patch'] },
  ];
}

/**
 * The ReplicaSet controller deletes the pods with the lowest cost first when
 * a Deployment shrinks; the lowest int32 puts the drained pods ahead of any
 * other. Kubernetes calls this best effort: a pod it cannot honour it for
 * (e.g. one not yet ready elsewhere) may still go first.
 */
const DELETION_COST_ANNOTATION = 'controller.kubernetes.io/pod-deletion-cost';
const LOWEST_DELETION_COST = String(-(2 ** 31));

/** Conflicting writers (a person's `kubectl scale`, another scheduler) settle within a few rounds; more means something keeps writing. */
const CONFLICT_ATTEMPTS = 5;

interface Scale {
  replicas: number;
  resourceVersion: string;
  /** The workload's label selector in query form, from the scale subresource: pods are found without reading the workload itself. */
  selector: string;
}

interface Call {
  verb: string;
  resource: string;
  apiGroup: string;
  target: string;
}

type ClientModule = typeof import('@kubernetes/client-node');

/**
 * Workers as the pods of a StatefulSet or a Deployment: the pool grows and
 * shrinks by patching the workload's scale subresource, and each pod runs
 * `repr worker --name <pod name>`, so the names the scheduler sees are pod
 * names.
 *
 * A StatefulSet (the recommended kind) names its pods NAME-0, NAME-1, … and
 * removes the highest ordinals when it shrinks, so only those can go:
 * `removable()` says which of the controller's idle candidates they are, and
 * `remove()` refuses any other. A Deployment's pods are marked with the lowest
 * pod-deletion-cost first, and their names are not known until the
 * ReplicaSet creates them, so `add()` returns none for it.
 */
export class KubernetesProvider implements WorkerProvider {
  readonly kind = 'kubernetes' as const;
  private readonly log: Logger;
  private readonly clock: Clock;

  private constructor(
    private readonly config: KubernetesProviderConfig,
    private readonly k8s: ClientModule,
    private readonly apps: AppsV1Api,
    private readonly core: CoreV1Api,
    private readonly server: string,
    options: { log?: Logger; clock?: Clock },
  ) {
    this.log = options.log ?? silentLogger();
    this.clock = options.clock ?? systemClock;
  }

  /**
   * Loads the kubeconfig and the client. The client is imported here, not at
   * the top: it takes about nine times as long to load as grpc-js (0.7 s on
   * a quiet machine), start-up that a server without a Kubernetes pool never
   * needs. `env` is where the in-cluster address is looked for.
   */
  static async create(config: KubernetesProviderConfig, options: { log?: Logger; clock?: Clock; env?: NodeJS.ProcessEnv } = {}): Promise<KubernetesProvider> {
    const env = options.env ?? process.env;
    if (config.inCluster && config.kubeconfig === undefined && !env.KUBERNETES_SERVICE_HOST) {
      // The client would otherwise dial https://undefined:undefined at the first scale-up.
      throw invalidArgument(
        'kubernetes provider: inCluster is set but this process is not in a pod (no KUBERNETES_SERVICE_HOST); give the provider a kubeconfig instead',
      );
    }
    const k8s = await import('@kubernetes/client-node');
    const kc = new k8s.KubeConfig();
    try {
      if (config.kubeconfig !== undefined) kc.loadFromFile(config.kubeconfig);
      else if (config.inCluster) kc.loadFromCluster();
      else kc.loadFromDefault();
    } catch (e) {
      const where = config.kubeconfig ?? (config.inCluster ? 'the in-cluster service account' : 'the default kubeconfig');
      throw invalidArgument(`kubernetes provider: cannot load ${where}: ${(e as Error).message}; set the provider's kubeconfig or inCluster`);
    }
    const cluster = kc.getCurrentCluster();
    if (!cluster) {
      throw invalidArgument("kubernetes provider: the kubeconfig has no current cluster; set its current-context or the provider's kubeconfig");
    }
    return new KubernetesProvider(config, k8s, kc.makeApiClient(k8s.AppsV1Api), kc.makeApiClient(k8s.CoreV1Api), cluster.server, options);
  }

  /** The workload a pool scales. */
  workload(pool: PoolKey): KubernetesWorkload {
    const mapped = this.config.pools?.[pool];
    if (!mapped) return { namespace: this.config.namespace, kind: this.config.kind, name: this.config.name };
    return { namespace: mapped.namespace ?? this.config.namespace, kind: mapped.kind ?? this.config.kind, name: mapped.name };
  }

  async list(pool: PoolKey): Promise<KubernetesWorker[]> {
    const w = this.workload(pool);
    const scale = await this.readScale(w);
    return (await this.pods(w, scale.selector)).map((p) => ({ name: p.metadata?.name ?? '', pool, phase: p.status?.phase ?? 'Unknown' }));
  }

  async add(pool: PoolKey, count: number): Promise<ProvidedWorker[]> {
    if (!Number.isInteger(count) || count <= 0) throw invalidArgument(`kubernetes provider: add needs a positive whole number of workers, not ${count}`);
    const w = this.workload(pool);
    const before = await this.rescale(w, (s) => s.replicas + count);
    if (w.kind === 'Deployment') return [];
    return Array.from({ length: count }, (_, i) => ({ name: `${w.name}-${before + i}`, pool }));
  }

  async removable(pool: PoolKey, candidates: readonly string[]): Promise<string[]> {
    const w = this.workload(pool);
    const scale = await this.readScale(w);
    if (w.kind === 'Deployment') {
      const live = new Set((await this.pods(w, scale.selector)).map((p) => p.metadata?.name));
      return candidates.filter((n) => live.has(n));
    }
    const wanted = new Set(candidates);
    const out: string[] = [];
    for (let i = scale.replicas - 1; i >= 0 && wanted.has(`${w.name}-${i}`); i--) out.push(`${w.name}-${i}`);
    return out;
  }

  async remove(pool: PoolKey, names: readonly string[]): Promise<void> {
    if (names.length === 0) return;
    const w = this.workload(pool);
    if (w.kind === 'StatefulSet') {
      await this.rescale(w, (s) => s.replicas - this.highestOrdinals(w, s.replicas, names));
      return;
    }
    const scale = await this.readScale(w);
    const live = new Set((await this.pods(w, scale.selector)).map((p) => p.metadata?.name));
    // A pod already gone (evicted, crashed and replaced) must not take a
    // healthy one with it: only the named pods still there lower the count.
    const present = names.filter((n) => live.has(n));
    for (const name of present) {
      await this.call({ verb: 'patch', resource: 'pods', apiGroup: '', target: `${w.namespace}/${name}` }, () =>
        this.core.patchNamespacedPod(
          { name, namespace: w.namespace, body: { metadata: { annotations: { [DELETION_COST_ANNOTATION]: LOWEST_DELETION_COST } } } },
          this.k8s.setHeaderOptions('Content-Type', this.k8s.PatchStrategy.MergePatch),
        ),
      );
    }
    if (present.length > 0) await this.rescale(w, (s) => Math.max(0, s.replicas - present.length));
  }

  async close(): Promise<void> {}

  /**
   * How many of `names` go when a StatefulSet of `replicas` shrinks: names at
   * or above `replicas` are already gone; the rest must be the top ordinals.
   */
  private highestOrdinals(w: KubernetesWorkload, replicas: number, names: readonly string[]): number {
    const ordinals = new Set<number>();
    for (const name of names) {
      const m = name.startsWith(`${w.name}-`) ? /^\d+$/.exec(name.slice(w.name.length + 1)) : null;
      if (!m) throw invalidArgument(`kubernetes provider: ${name} is not a pod of StatefulSet ${w.namespace}/${w.name} (its pods are ${w.name}-<ordinal>)`);
      const ordinal = Number(m[0]);
      if (ordinal < replicas) ordinals.add(ordinal);
    }
    for (let i = replicas - 1; i >= replicas - ordinals.size; i--) {
      if (!ordinals.has(i)) {
        const asked = [...ordinals].sort((a, b) => b - a).map((o) => `${w.name}-${o}`);
        throw new ReprError(
          Code.FAILED_PRECONDITION,
          `kubernetes provider: StatefulSet ${w.namespace}/${w.name} at ${replicas} replicas removes its highest ordinals first; ${w.name}-${i} is not among ${asked.join(', ')} (ask removable() which workers can go)`,
        );
      }
    }
    return ordinals.size;
  }

  /**
   * Sets replicas to `next(current scale)` under the scale's resourceVersion,
   * so a concurrent change (409 Conflict) is re-read and recomputed rather
   * than overwritten. Returns the replica count it changed from.
   */
  private async rescale(w: KubernetesWorkload, next: (s: Scale) => number): Promise<number> {
    const resource = w.kind === 'StatefulSet' ? 'statefulsets/scale' : 'deployments/scale';
    const call = { verb: 'patch', resource, apiGroup: 'apps', target: `${w.namespace}/${w.name}` };
    for (let attempt = 1; ; attempt++) {
      const scale = await this.readScale(w);
      const replicas = next(scale);
      if (replicas === scale.replicas) return scale.replicas;
      const body = { metadata: { resourceVersion: scale.resourceVersion }, spec: { replicas } };
      const options = this.k8s.setHeaderOptions('Content-Type', this.k8s.PatchStrategy.MergePatch);
      try {
        await this.call(call, () =>
          w.kind === 'StatefulSet'
            ? this.apps.patchNamespacedStatefulSetScale({ name: w.name, namespace: w.namespace, body }, options)
            : this.apps.patchNamespacedDeploymentScale({ name: w.name, namespace: w.namespace, body }, options),
        );
        this.log.info({ workload: `${w.kind} ${w.namespace}/${w.name}`, from: scale.replicas, to: replicas }, 'scaled kubernetes workload');
        return scale.replicas;
      } catch (e) {
        if ((e as ReprError).code !== Code.ABORTED || attempt >= CONFLICT_ATTEMPTS) throw e;
        this.log.debug({ workload: `${w.kind} ${w.namespace}/${w.name}`, attempt }, 'scale changed under us; reading it again');
      }
    }
  }

  private async readScale(w: KubernetesWorkload): Promise<Scale> {
    const resource = w.kind === 'StatefulSet' ? 'statefulsets/scale' : 'deployments/scale';
    const s = await this.call({ verb: 'get', resource, apiGroup: 'apps', target: `${w.namespace}/${w.name}` }, () =>
      w.kind === 'StatefulSet'
        ? this.apps.readNamespacedStatefulSetScale({ name: w.name, namespace: w.namespace })
        : this.apps.readNamespacedDeploymentScale({ name: w.name, namespace: w.namespace }),
    );
    const selector = s.status?.selector;
    if (!selector) {
      throw new ReprError(Code.FAILED_PRECONDITION, `kubernetes provider: ${w.kind} ${w.namespace}/${w.name} has no label selector in its scale subresource`);
    }
    return { replicas: s.spec?.replicas ?? 0, resourceVersion: s.metadata?.resourceVersion ?? '', selector };
  }

  /** The workload's pods that are not on their way out. */
  private async pods(w: KubernetesWorkload, selector: string): Promise<V1Pod[]> {
    const list = await this.call({ verb: 'list', resource: 'pods', apiGroup: '', target: w.namespace }, () =>
      this.core.listNamespacedPod({ namespace: w.namespace, labelSelector: selector }),
    );
    return list.items
      .filter((p) => !p.metadata?.deletionTimestamp && p.metadata?.name)
      .sort((a, b) => byOrdinal(a.metadata?.name ?? '', b.metadata?.name ?? ''));
  }

  /** One API call, bounded in time, its failure turned into a ReprError that says what to fix. */
  private async call<T>(what: Call, fn: () => Promise<T>): Promise<T> {
    const ms = this.config.requestTimeoutSeconds * 1000;
    let cancel = () => {};
    const timeout = new Promise<never>((_, reject) => {
      cancel = this.clock.setTimeout(
        () =>
          reject(
            new ReprError(
              Code.UNAVAILABLE,
              `kubernetes API at ${this.server} did not answer ${what.verb} ${what.resource} within ${this.config.requestTimeoutSeconds} s`,
            ),
          ),
        ms,
      );
    });
    try {
      return await Promise.race([fn(), timeout]);
    } catch (e) {
      throw this.failure(what, e);
    } finally {
      cancel();
    }
  }

  private failure(what: Call, e: unknown): ReprError {
    if (e instanceof ReprError) return e;
    if (!(e instanceof this.k8s.ApiException)) {
      return new ReprError(
        Code.UNAVAILABLE,
        `kubernetes API at ${this.server} is unreachable (${(e as Error).message}); check the cluster address in the provider's kubeconfig`,
        { cause: e },
      );
    }
    const http = e.code;
    const said = apiMessage(e.body);
    const on = `${what.verb} ${what.resource} ${what.target}`;
    if (http === 403) {
      const group = what.apiGroup === '' ? 'the core API group ""' : `API group "${what.apiGroup}"`;
      return new ReprError(
        Code.PERMISSION_DENIED,
        `kubernetes: ${on} forbidden: the scheduler's service account needs RBAC verb "${what.verb}" on "${what.resource}" in ${group} in namespace ${this.config.namespace} (see deploy/rbac.yaml)${said}`,
        { cause: e },
      );
    }
    if (http === 401)
      return new ReprError(Code.UNAUTHENTICATED, `kubernetes: ${on}: the API server did not accept the kubeconfig's credentials${said}`, { cause: e });
    if (http === 404) return new ReprError(Code.NOT_FOUND, `kubernetes: ${on}: not found; check the provider's namespace, kind and name${said}`, { cause: e });
    if (http === 409) return new ReprError(Code.ABORTED, `kubernetes: ${on}: changed by someone else meanwhile${said}`, { cause: e });
    if (http === 400 || http === 422) return new ReprError(Code.INVALID_ARGUMENT, `kubernetes: ${on}: refused${said}`, { cause: e });
    if (http === 429 || http >= 500) return new ReprError(Code.UNAVAILABLE, `kubernetes: ${on}: API server answered ${http}${said}`, { cause: e });
    return new ReprError(Code.INTERNAL, `kubernetes: ${on}: unexpected HTTP ${http}${said}`, { cause: e });
  }
}

/** The message of a Kubernetes Status object, as the client hands it over (parsed or as text). */
function apiMessage(body: unknown): string {
  let b = body;
  if (typeof body === 'string') {
    try {
      b = JSON.parse(body);
    } catch {
      return body ? `: ${body.slice(0, 300)}` : '';
    }
  }
  const message = (b as { message?: unknown } | undefined)?.message;
  return typeof message === 'string' && message ? `: ${message}` : '';
}

/** NAME-10 after NAME-9: StatefulSet ordinals compare as numbers. */
function byOrdinal(a: string, b: string): number {
  const na = /-(\d+)$/.exec(a);
  const nb = /-(\d+)$/.exec(b);
  if (na && nb && a.slice(0, na.index) === b.slice(0, nb.index)) return Number(na[1]) - Number(nb[1]);
  return a < b ? -1 : a > b ? 1 : 0;
}
