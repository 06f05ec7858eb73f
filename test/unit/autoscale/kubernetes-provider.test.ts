/**
 * The Kubernetes provider against a replayed API exchange. No Kubernetes API
 * server can be started on this machine (Debian has kubectl and etcd but no
 * kube-apiserver, the npm registry has none, and there is no container
 * engine for a kind or k3s cluster), so a real HTTP server on a loopback
 * port answers with the Kubernetes API's own responses
 * (test/fixtures/kubernetes/api-responses.json) and records what the
 * provider sent. The provider runs unchanged: the real client, loaded from a
 * real kubeconfig file (a token and a cluster CA, as a cluster gives), over
 * HTTPS as the API server speaks it.
 */
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import type http from 'node:http';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { after, before, beforeEach, describe, it } from 'node:test';
import { KubernetesProvider, type KubernetesProviderConfig } from '../../../src/autoscale/kubernetes-provider.js';
import { ManualClock } from '../../../src/common/clock.js';
import { Code, type ReprError } from '../../../src/common/errors.js';
import { type CertAuthority, makeCertAuthority } from '../../../support/certs.js';
import { writeKubeconfig } from '../../../support/kubeconfig.js';
import { REPO_ROOT } from '../../../support/servers.js';
import { tmpDir } from '../../../support/tmp.js';

const API = JSON.parse(readFileSync(path.join(REPO_ROOT, 'test', 'fixtures', 'kubernetes', 'api-responses.json'), 'utf8')) as Record<string, unknown>;
const TOKEN = 'replayed-service-account-token';
const MERGE_PATCH = 'application/merge-patch+json';
const STS_SCALE = '/apis/apps/v1/namespaces/repr/statefulsets/repr-worker/scale';
const DEPLOY_SCALE = '/apis/apps/v1/namespaces/repr/deployments/repr-worker/scale';
const PODS = `/api/v1/namespaces/repr/pods?labelSelector=${encodeURIComponent('app.kubernetes.io/component=worker,app.kubernetes.io/name=repr')}`;

interface Sent {
  method: string;
  path: string;
  contentType?: string;
  body?: unknown;
}

interface Step {
  expect: Sent;
  status: number;
  /** A key of the fixture file; absent: the server never answers. */
  reply?: string;
}

/** An HTTP server that plays the API server's side of a scripted exchange and records every request. */
class ReplayedApi {
  private readonly server: https.Server;
  private script: Step[] = [];
  sent: Sent[] = [];
  badAuth: string[] = [];
  private waiters: (() => void)[] = [];

  constructor(ca: CertAuthority) {
    const tls = ca.server('kube-apiserver');
    this.server = https.createServer({ cert: readFileSync(tls.cert), key: readFileSync(tls.key) }, (req, res) => this.answer(req, res));
  }

  async start(): Promise<string> {
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', resolve));
    return `https://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }

  play(steps: Step[]): void {
    this.script = [...steps];
    this.sent = [];
    this.badAuth = [];
  }

  /** The requests the script expected, to compare with `sent`. */
  expected(steps: Step[]): Sent[] {
    return steps.map((s) => s.expect);
  }

  /** Resolves once `n` requests have arrived. */
  async requests(n: number): Promise<void> {
    while (this.sent.length < n) await new Promise<void>((resolve) => this.waiters.push(resolve));
  }

  async stop(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private answer(req: http.IncomingMessage, res: http.ServerResponse): void {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const text = Buffer.concat(chunks).toString('utf8');
      const sent: Sent = { method: req.method ?? '', path: req.url ?? '' };
      if (req.method === 'PATCH' || text) {
        sent.contentType = req.headers['content-type'];
        sent.body = text ? JSON.parse(text) : undefined;
      }
      if (req.headers.authorization !== `Bearer ${TOKEN}`) this.badAuth.push(`${sent.method} ${sent.path}: ${req.headers.authorization}`);
      this.sent.push(sent);
      for (const w of this.waiters.splice(0)) w();
      const step = this.script.shift();
      if (!step) {
        res
          .writeHead(500, { 'content-type': 'application/json' })
          .end('{"kind":"Status","apiVersion":"v1","status":"Failure","message":"unscripted request","code":500}');
        return;
      }
      if (step.reply === undefined) return;
      res.writeHead(step.status, { 'content-type': 'application/json' }).end(JSON.stringify(API[step.reply]));
    });
  }
}

const kubeconfig = (server: string, ca: CertAuthority) => writeKubeconfig(server, ca.cert, TOKEN);

const getScale = (reply: string, p = STS_SCALE): Step => ({ expect: { method: 'GET', path: p }, status: 200, reply });
const patchScale = (replicas: number, resourceVersion: string, status: number, reply: string, p = STS_SCALE): Step => ({
  expect: { method: 'PATCH', path: p, contentType: MERGE_PATCH, body: { metadata: { resourceVersion }, spec: { replicas } } },
  status,
  reply,
});
const listPods = (reply: string, status = 200): Step => ({ expect: { method: 'GET', path: PODS }, status, reply });

async function rejection(p: Promise<unknown>): Promise<ReprError> {
  try {
    await p;
  } catch (e) {
    return e as ReprError;
  }
  assert.fail('expected the call to fail');
}

describe('KubernetesProvider against a replayed Kubernetes API', () => {
  const ca = makeCertAuthority(tmpDir(), 'cluster-ca');
  const api = new ReplayedApi(ca);
  let file: string;
  let clock: ManualClock;
  let provider: KubernetesProvider;
  const base: KubernetesProviderConfig = { namespace: 'repr', kind: 'StatefulSet', name: 'repr-worker', requestTimeoutSeconds: 30 };

  before(async () => {
    file = kubeconfig(await api.start(), ca);
  });
  beforeEach(async () => {
    clock = new ManualClock(Date.parse('2026-11-30T09:20:00Z'));
    provider = await KubernetesProvider.create({ ...base, kubeconfig: file }, { clock });
  });
  after(() => api.stop());

  async function exchange<T>(steps: Step[], run: () => Promise<T>): Promise<T> {
    api.play(steps);
    const out = await run();
    assert.deepEqual(api.sent, api.expected(steps));
    assert.deepEqual(api.badAuth, [], 'every request carries the kubeconfig token');
    return out;
  }

  it('adds workers by patching the scale it read, as a merge patch under its resourceVersion', async () => {
    const added = await exchange([getScale('statefulSetScale2'), patchScale(4, '48213', 200, 'statefulSetScale4')], () => provider.add('', 2));
    assert.deepEqual(added, [
      { name: 'repr-worker-2', pool: '' },
      { name: 'repr-worker-3', pool: '' },
    ]);
  });

  it('reads the scale again after a 409 conflict and adds to what someone else set', async () => {
    const steps = [
      getScale('statefulSetScale2'),
      patchScale(4, '48213', 409, 'conflict'),
      getScale('statefulSetScale3'),
      patchScale(5, '48219', 200, 'statefulSetScale5'),
    ];
    const added = await exchange(steps, () => provider.add('', 2));
    assert.deepEqual(
      added.map((w) => w.name),
      ['repr-worker-3', 'repr-worker-4'],
    );
  });

  it('gives up with ABORTED when the scale keeps changing under it', async () => {
    const steps: Step[] = [];
    for (let i = 0; i < 5; i++) steps.push(getScale('statefulSetScale2'), patchScale(3, '48213', 409, 'conflict'));
    const e = await exchange(steps, () => rejection(provider.add('', 1)));
    assert.equal(e.code, Code.ABORTED);
    assert.match(e.message, /patch statefulsets\/scale repr\/repr-worker: changed by someone else meanwhile: Operation cannot be fulfilled/);
  });

  it('lists the pods the scale selector matches, with their phase, in ordinal order, leaving out terminating ones', async () => {
    const workers = await exchange([getScale('statefulSetScale4'), listPods('statefulSetPods')], () => provider.list(''));
    assert.deepEqual(workers, [
      { name: 'repr-worker-0', pool: '', phase: 'Running' },
      { name: 'repr-worker-2', pool: '', phase: 'Running' },
      { name: 'repr-worker-10', pool: '', phase: 'Pending' },
    ]);
  });

  it('offers only the highest ordinals of a StatefulSet for removal (repr-worker-1 is busy here), and removes them by scaling down', async () => {
    const removable = await exchange([getScale('statefulSetScale4')], () => provider.removable('', ['repr-worker-0', 'repr-worker-3', 'repr-worker-2']));
    assert.deepEqual(removable, ['repr-worker-3', 'repr-worker-2']);
    await exchange([getScale('statefulSetScale4'), patchScale(2, '48226', 200, 'statefulSetScale2After')], () =>
      provider.remove('', ['repr-worker-2', 'repr-worker-3']),
    );
  });

  it('refuses to remove a StatefulSet pod below the top ordinals, before patching anything', async () => {
    const e = await exchange([getScale('statefulSetScale4')], () => rejection(provider.remove('', ['repr-worker-1'])));
    assert.equal(e.code, Code.FAILED_PRECONDITION);
    assert.match(e.message, /removes its highest ordinals first; repr-worker-3 is not among repr-worker-1/);
    const other = await exchange([getScale('statefulSetScale4')], () => rejection(provider.remove('', ['builder-3'])));
    assert.equal(other.code, Code.INVALID_ARGUMENT);
    assert.match(other.message, /builder-3 is not a pod of StatefulSet repr\/repr-worker/);
  });

  it('treats a StatefulSet pod above the replica count as already removed', async () => {
    await exchange([getScale('statefulSetScale3'), patchScale(2, '48219', 200, 'statefulSetScale2After')], () =>
      provider.remove('', ['repr-worker-2', 'repr-worker-7']),
    );
  });

  it('marks the chosen Deployment pods with the lowest deletion cost, then scales down by those still there', async () => {
    const deployment = await KubernetesProvider.create({ ...base, kind: 'Deployment', kubeconfig: file }, { clock });
    const annotate = {
      expect: {
        method: 'PATCH',
        path: '/api/v1/namespaces/repr/pods/repr-worker-5f7b9c6d8-fghij',
        contentType: MERGE_PATCH,
        body: { metadata: { annotations: { 'controller.kubernetes.io/pod-deletion-cost': '-2147483648' } } },
      },
      status: 200,
      reply: 'deploymentPodAnnotated',
    };
    await exchange(
      [
        getScale('deploymentScale3', DEPLOY_SCALE),
        listPods('deploymentPods'),
        annotate,
        getScale('deploymentScale3', DEPLOY_SCALE),
        patchScale(2, '51002', 200, 'deploymentScale2', DEPLOY_SCALE),
      ],
      () => deployment.remove('', ['repr-worker-5f7b9c6d8-fghij', 'repr-worker-5f7b9c6d8-gone0']),
    );
    const added = await exchange([getScale('deploymentScale2', DEPLOY_SCALE), patchScale(3, '51010', 200, 'deploymentScale3', DEPLOY_SCALE)], () =>
      deployment.add('', 1),
    );
    assert.deepEqual(added, [], "a Deployment's pod names are chosen by its ReplicaSet later");
  });

  it('scales the workload a pool is mapped to', async () => {
    const mapped = await KubernetesProvider.create({ ...base, kubeconfig: file, pools: { 'OSFamily=linux,pool=big': { name: 'repr-big' } } }, { clock });
    const bigScale = '/apis/apps/v1/namespaces/repr/statefulsets/repr-big/scale';
    const added = await exchange([getScale('statefulSetScale2', bigScale), patchScale(3, '48213', 200, 'statefulSetScale3', bigScale)], () =>
      mapped.add('OSFamily=linux,pool=big', 1),
    );
    assert.deepEqual(added, [{ name: 'repr-big-2', pool: 'OSFamily=linux,pool=big' }]);
  });

  it('answers a 403 with PERMISSION_DENIED naming the RBAC verb and resource it needs', async () => {
    const patch = await exchange([getScale('statefulSetScale2'), patchScale(3, '48213', 403, 'forbiddenPatchScale')], () => rejection(provider.add('', 1)));
    assert.equal(patch.code, Code.PERMISSION_DENIED);
    assert.match(patch.message, /needs RBAC verb "patch" on "statefulsets\/scale" in API group "apps" in namespace repr/);
    assert.match(patch.message, /cannot patch resource "statefulsets\/scale"/, 'the API server says who was refused');
    const list = await exchange([getScale('statefulSetScale2'), listPods('forbiddenListPods', 403)], () => rejection(provider.list('')));
    assert.equal(list.code, Code.PERMISSION_DENIED);
    assert.match(list.message, /needs RBAC verb "list" on "pods" in the core API group "" in namespace repr/);
  });

  it('answers a missing workload with NOT_FOUND naming what to check', async () => {
    const e = await exchange([{ expect: { method: 'GET', path: STS_SCALE }, status: 404, reply: 'notFound' }], () => rejection(provider.list('')));
    assert.equal(e.code, Code.NOT_FOUND);
    assert.match(e.message, /get statefulsets\/scale repr\/repr-worker: not found; check the provider's namespace, kind and name/);
  });

  it('fails with UNAVAILABLE when the API server does not answer in time', { timeout: 60_000 }, async () => {
    api.play([{ expect: { method: 'GET', path: STS_SCALE }, status: 200 }]);
    const pending = rejection(provider.list(''));
    await api.requests(1);
    clock.advance(30_000);
    const e = await pending;
    assert.equal(e.code, Code.UNAVAILABLE);
    assert.match(e.message, /did not answer get statefulsets\/scale within 30 s/);
  });

  it('fails with UNAVAILABLE naming the address when nothing listens there', async () => {
    const closed = new ReplayedApi(ca);
    const address = await closed.start();
    await closed.stop();
    const unreachable = await KubernetesProvider.create({ ...base, kubeconfig: kubeconfig(address, ca) }, { clock });
    const e = await rejection(unreachable.add('', 1));
    assert.equal(e.code, Code.UNAVAILABLE);
    assert.ok(e.message.includes(`kubernetes API at ${address} is unreachable`), e.message);
    assert.match(e.message, /check the cluster address in the provider's kubeconfig/);
  });

  it('refuses a kubeconfig it cannot read, or inCluster outside a pod, with INVALID_ARGUMENT naming the setting', async () => {
    const e = await rejection(KubernetesProvider.create({ ...base, kubeconfig: path.join(tmpDir(), 'missing') }));
    assert.equal(e.code, Code.INVALID_ARGUMENT);
    assert.match(e.message, /cannot load .*missing.*; set the provider's kubeconfig or inCluster/);
    const outside = await rejection(KubernetesProvider.create({ ...base, inCluster: true }, { env: {} }));
    assert.equal(outside.code, Code.INVALID_ARGUMENT);
    assert.match(outside.message, /inCluster is set but this process is not in a pod .*; give the provider a kubeconfig instead/);
    const zero = await rejection(provider.add('', 0));
    assert.equal(zero.code, Code.INVALID_ARGUMENT);
  });
});
