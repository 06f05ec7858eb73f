/**
 * deploy/ as a cluster would take it: every document is checked against the
 * Kubernetes OpenAPI schema of its kind (kubernetes-models ships them
 * compiled), and then against what repr needs of it: probes on ports the
 * container opens, workers pointed at the Service, flags the real parsers
 * accept, a config the server accepts, RBAC that grants exactly what the
 * Kubernetes provider calls.
 */
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { ConfigMap, Namespace, Service, ServiceAccount } from 'kubernetes-models/v1';
import { Deployment, StatefulSet } from 'kubernetes-models/apps/v1';
import { Role, RoleBinding } from 'kubernetes-models/rbac.authorization.k8s.io/v1';
import { parseAllDocuments } from 'yaml';
import { rbacRules } from '../../src/autoscale/kubernetes-provider.js';
import { compileServerConfig } from '../../src/config/config.js';
import { flagName, overlayFlags, parseFlagValue } from '../../src/config/flag.js';
import { workerFlags } from '../../src/config/flags.js';
import { compileWorkerConfig, type WorkerConfig } from '../../src/config/worker-config.js';
import { parseByteSize } from '../../src/common/units.js';
import { REPO_ROOT } from '../../support/servers.js';

const DEPLOY = path.join(REPO_ROOT, 'deploy');

// biome-ignore lint/suspicious/noExplicitAny: manifests are checked field by field below, after the schema check.
type Obj = any;

const MODELS: Record<string, { validate(data: unknown): void }> = {
  'v1/Namespace': { validate: (d) => new Namespace(d as never).validate() },
  'v1/ServiceAccount': { validate: (d) => new ServiceAccount(d as never).validate() },
  'v1/ConfigMap': { validate: (d) => new ConfigMap(d as never).validate() },
  'v1/Service': { validate: (d) => new Service(d as never).validate() },
  'apps/v1/Deployment': { validate: (d) => new Deployment(d as never).validate() },
  'apps/v1/StatefulSet': { validate: (d) => new StatefulSet(d as never).validate() },
  'rbac.authorization.k8s.io/v1/Role': { validate: (d) => new Role(d as never).validate() },
  'rbac.authorization.k8s.io/v1/RoleBinding': { validate: (d) => new RoleBinding(d as never).validate() },
};

function loadManifests(): { file: string; obj: Obj }[] {
  const out: { file: string; obj: Obj }[] = [];
  const files = readdirSync(DEPLOY).filter((f) => f.endsWith('.yaml'));
  assert.ok(files.length > 0, 'deploy/ has manifests');
  for (const file of files) {
    for (const doc of parseAllDocuments(readFileSync(path.join(DEPLOY, file), 'utf8'))) {
      assert.deepEqual(doc.errors, [], `${file} is valid YAML`);
      out.push({ file, obj: doc.toJS() });
    }
  }
  return out;
}

const manifests = loadManifests();

function one(kind: string, name: string): Obj {
  const found = manifests.filter((m) => m.obj.kind === kind && m.obj.metadata?.name === name);
  assert.equal(found.length, 1, `exactly one ${kind} ${name} in deploy/`);
  return found[0]?.obj;
}

const container = (workload: Obj, name: string): Obj => workload.spec.template.spec.containers.find((c: Obj) => c.name === name);

/** The port a probe or a Service's targetPort names, as the container's number; fails if the container does not open it. */
function containerPort(c: Obj, port: string | number): number {
  const p = c.ports?.find((x: Obj) => x.name === port || x.containerPort === port);
  assert.ok(p, `container ${c.name} opens port ${port}`);
  return p.containerPort;
}

/** Container args as `repr worker` parses them (the real flag table), with Kubernetes' $(VAR) filled in. */
function workerConfigOf(args: string[], env: Record<string, string>): WorkerConfig {
  assert.equal(args[0], 'worker');
  const values = new Map<string, unknown>();
  let flag: (typeof workerFlags)[number] | undefined;
  for (const raw of args.slice(1)) {
    const arg = raw.replace(/\$\((\w+)\)/g, (_, v: string) => env[v] ?? assert.fail(`$(${v}) is not in the container's env`));
    if (arg.startsWith('--')) {
      flag = workerFlags.find((f) => flagName(f) === arg);
      assert.ok(flag, `repr worker has a flag ${arg}`);
      continue;
    }
    assert.ok(flag, `${arg} follows a flag`);
    values.set(flagName(flag), parseFlagValue(flag, arg, values.get(flagName(flag))));
    if (flag.kind !== 'list' && flag.kind !== 'properties') flag = undefined;
  }
  return compileWorkerConfig(overlayFlags({}, workerFlags, (f) => values.get(flagName(f))));
}

describe('deploy/ manifests', () => {
  it('are valid YAML documents that pass the Kubernetes schema of their kind', () => {
    for (const { file, obj } of manifests) {
      const model = MODELS[`${obj.apiVersion}/${obj.kind}`];
      assert.ok(model, `${file}: ${obj.apiVersion} ${obj.kind} is a kind the test knows`);
      assert.doesNotThrow(() => model.validate(obj), `${file}: ${obj.kind} ${obj.metadata?.name}`);
      if (obj.kind !== 'Namespace') assert.equal(obj.metadata.namespace, 'repr', `${file}: ${obj.kind} ${obj.metadata.name} is in the farm's namespace`);
    }
    one('Namespace', 'repr');
  });

  it('catch a manifest the schema refuses', () => {
    const broken = structuredClone(one('StatefulSet', 'repr-worker'));
    broken.spec.template.spec.containers[0].resources.limits.cpu = { cores: 4 };
    assert.throws(() => new StatefulSet(broken).validate());
  });

  const scheduler = one('Deployment', 'repr-scheduler');
  const service = one('Service', 'repr-scheduler');
  const workers = one('StatefulSet', 'repr-worker');
  const serverJson = JSON.parse(one('ConfigMap', 'repr-scheduler-config').data['server.json']);
  // The whole file, autoscale pool and Kubernetes provider included, as `repr server --config` reads it.
  const server = compileServerConfig(serverJson);
  const autoscale = serverJson.autoscale;
  const pool = autoscale.pools[0];
  const compiledPool = server.autoscale.pools[0]!;
  assert.equal(compiledPool.provider.type, 'kubernetes');
  const provider = compiledPool.provider as Extract<typeof compiledPool.provider, { type: 'kubernetes' }>;
  const sc = container(scheduler, 'scheduler');
  const wc = container(workers, 'worker');
  const worker = workerConfigOf(wc.args, { POD_NAME: 'repr-worker-0' });

  it('give the scheduler its config, and probe /readyz and /healthz on the metrics port it listens on', () => {
    const config = sc.args[sc.args.indexOf('--config') + 1];
    const mount = sc.volumeMounts.find((m: Obj) => config.startsWith(`${m.mountPath}/`));
    const volume = scheduler.spec.template.spec.volumes.find((v: Obj) => v.name === mount.name);
    assert.equal(volume.configMap.name, 'repr-scheduler-config');
    assert.equal(path.basename(config), 'server.json');

    assert.equal(containerPort(sc, 'grpc'), Number(server.listen.split(':').pop()));
    const metricsPort = Number(server.metricsListen?.split(':').pop());
    assert.equal(sc.readinessProbe.httpGet.path, '/readyz');
    assert.equal(sc.livenessProbe.httpGet.path, '/healthz');
    assert.equal(containerPort(sc, sc.readinessProbe.httpGet.port), metricsPort);
    assert.equal(containerPort(sc, sc.livenessProbe.httpGet.port), metricsPort);
    assert.equal(server.execution.executors, 0, 'the scheduler leaves the actions to the workers');
  });

  it('select their own pods', () => {
    for (const w of [scheduler, workers]) {
      for (const [k, v] of Object.entries(w.spec.selector.matchLabels)) assert.equal(w.spec.template.metadata.labels[k], v, `${w.metadata.name} selects ${k}`);
    }
    for (const [k, v] of Object.entries(service.spec.selector)) assert.equal(scheduler.spec.template.metadata.labels[k], v, `the Service selects ${k}`);
    for (const [k, v] of Object.entries(service.spec.selector)) {
      if (workers.spec.template.metadata.labels[k] !== v) return;
    }
    assert.fail('the scheduler Service must not select worker pods');
  });

  it("point each worker at the scheduler's Service, named after its pod", () => {
    assert.equal(worker.scheduler.length, 1);
    const target = new URL(worker.scheduler[0] ?? '');
    assert.equal(target.protocol, 'grpc:');
    assert.ok([service.metadata.name, `${service.metadata.name}.repr`, `${service.metadata.name}.repr.svc`].includes(target.hostname), target.hostname);
    const port = service.spec.ports.find((p: Obj) => p.port === Number(target.port));
    assert.ok(port, `the Service has port ${target.port}`);
    assert.equal(containerPort(sc, port.targetPort), Number(server.listen.split(':').pop()), 'that port reaches the gRPC listener');
    assert.equal(worker.name, 'repr-worker-0');
    assert.deepEqual(wc.env.find((e: Obj) => e.name === 'POD_NAME').valueFrom, { fieldRef: { fieldPath: 'metadata.name' } });
  });

  it('size the worker container for what its actions may ask, and let it drain before it is killed', () => {
    const limits = wc.resources.limits;
    assert.equal(Number(limits.cpu), worker.execution.cpus);
    assert.ok((parseByteSize(limits.memory) ?? 0) > worker.execution.memoryBytes, 'memory above --memory for the worker itself');
    assert.deepEqual(wc.resources.requests, limits, 'Guaranteed QoS');
    assert.ok(workers.spec.template.spec.terminationGracePeriodSeconds > worker.drainTimeoutSeconds);
    assert.equal(workers.spec.podManagementPolicy, 'Parallel');
    assert.equal(workers.spec.replicas, undefined, 'the autoscaler owns the replica count');
  });

  it('describe the autoscale pool as the workers are: properties, executors, names', () => {
    assert.equal(autoscale.enabled, true);
    assert.equal(provider.kind, workers.kind);
    assert.equal(provider.name, workers.metadata.name);
    assert.equal(provider.namespace, workers.metadata.namespace);
    assert.equal(provider.inCluster, true);
    const properties = Object.fromEntries(Object.entries(pool.properties as Record<string, string>).map(([k, v]) => [k, [v]]));
    assert.deepEqual(worker.execution.properties, properties);
    assert.equal(pool.executorsPerWorker, worker.execution.executors);
    assert.ok(pool.minWorkers >= 1 && pool.minWorkers <= pool.maxWorkers);
    // The controller counts a pool's workers by the prefix <pool>-: pod names must carry it.
    assert.ok(`${workers.metadata.name}-0`.startsWith(`${pool.name}-`));
  });

  it('grant the scheduler exactly what the Kubernetes provider calls, and nothing more', () => {
    const role = one('Role', 'repr-autoscaler');
    const granted = role.rules.flatMap((r: Obj) =>
      r.apiGroups.flatMap((g: string) => r.resources.flatMap((res: string) => r.verbs.map((v: string) => `${g}/${res}:${v}`))),
    );
    const needed = rbacRules(provider.kind).flatMap((r) => r.verbs.map((v) => `${r.apiGroup}/${r.resource}:${v}`));
    assert.deepEqual([...granted].sort(), [...needed].sort());

    const binding = one('RoleBinding', 'repr-autoscaler');
    assert.deepEqual(binding.roleRef, { apiGroup: 'rbac.authorization.k8s.io', kind: 'Role', name: role.metadata.name });
    const account = one('ServiceAccount', scheduler.spec.template.spec.serviceAccountName);
    assert.deepEqual(binding.subjects, [{ kind: 'ServiceAccount', name: account.metadata.name, namespace: account.metadata.namespace }]);
    assert.equal(role.metadata.namespace, provider.namespace);
  });

  // No container engine runs here, so the image is not built by the tests: what they can hold it to is
  // that it is the image the manifests name, with what the workers' sandbox needs at run time.
  it('run the image deploy/Dockerfile builds, which carries the sandbox and FUSE packages', () => {
    const dockerfile = readFileSync(path.join(DEPLOY, 'Dockerfile'), 'utf8');
    const tag = /docker build -f deploy\/Dockerfile -t (\S+) \./.exec(dockerfile)?.[1];
    for (const c of [sc, wc]) {
      assert.equal(c.image, tag, `${c.name} runs the image the Dockerfile says it builds`);
      assert.deepEqual(c.command, ['repr']);
    }
    const stages = dockerfile.split(/^FROM /m).slice(1);
    const runtime = stages.at(-1)!;
    const installed = /apt-get install[^\n]*/.exec(runtime)?.[0].split(/\s+/) ?? [];
    for (const pkg of ['bubblewrap', 'fuse', 'libfuse2']) assert.ok(installed.includes(pkg), `the runtime stage installs ${pkg}`);
    assert.match(runtime, /ln -s \/opt\/repr\/bin\/repr\.js \/usr\/local\/bin\/repr/, 'repr is on PATH, as command: [repr] needs');
    assert.match(stages[0]!, /npm ci/);
    assert.match(stages[0]!, /npm run build/);
  });
});
