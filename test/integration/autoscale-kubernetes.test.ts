/**
 * `repr server` with a pool on the Kubernetes provider, end to end: the
 * server's config names a StatefulSet and a kubeconfig, the autoscaler
 * patches the StatefulSet's scale subresource over HTTPS, and the pods it
 * asks for register as workers and execute a burst.
 *
 * No Kubernetes API server can be started on this machine (Debian has no
 * kube-apiserver, the npm registry has none, and there is no container engine
 * for kind or k3s), so the cluster here is the smallest stand-in that behaves
 * as one for these calls: an HTTPS server that keeps a StatefulSet's replica
 * count under a resourceVersion (409 on a stale one), lists its pods, and, as
 * the StatefulSet controller and the kubelet would, starts `repr worker
 * --name repr-worker-<ordinal>` for each new ordinal and sends SIGTERM to the
 * highest ordinals when the count drops. The provider's requests and their
 * exact shapes are checked against the Kubernetes API's own responses in
 * test/unit/autoscale/kubernetes-provider.test.ts.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import type http from 'node:http';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { ExecClient, uploadAction } from '../../src/client/execution-client.js';
import { Code } from '../../src/common/errors.js';
import type { GetStatusResponse } from '../../src/proto/repr/worker/v1/worker.js';
import { ReapiClient } from '../../src/reapi/reapi-client.js';
import { makeCertAuthority } from '../../support/certs.js';
import { writeKubeconfig } from '../../support/kubeconfig.js';
import { type ServerProcess, startServerProcess, waitForStatus } from '../../support/servers.js';
import { REPR_BIN, runReprToEnd } from '../../support/spawn-server.js';
import { tmpDir } from '../../support/tmp.js';

const TOKEN = 'service-account-token-of-the-scheduler';
const SCALE = '/apis/apps/v1/namespaces/repr/statefulsets/repr-worker/scale';
const SELECTOR = 'app.kubernetes.io/component=worker,app.kubernetes.io/name=repr';
const PODS = `/api/v1/namespaces/repr/pods?labelSelector=${encodeURIComponent(SELECTOR)}`;

interface Pod {
  ordinal: number;
  proc: ChildProcess;
  exited?: number | null;
}

/** One StatefulSet's worth of a cluster: its scale, its pods as `repr worker` processes, and a log of what happened. */
class StatefulSetStandIn {
  private readonly server: https.Server;
  replicas = 1;
  private version = 1000;
  readonly pods = new Map<number, Pod>();
  readonly events: string[] = [];
  readonly badRequests: string[] = [];
  schedulerUrl = '';

  constructor(
    tls: { cert: string; key: string },
    private readonly dataDir: string,
  ) {
    this.server = https.createServer({ cert: readFileSync(tls.cert), key: readFileSync(tls.key) }, (req, res) => this.answer(req, res));
  }

  async start(): Promise<string> {
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', resolve));
    return `https://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }

  async stop(): Promise<void> {
    for (const p of this.pods.values()) p.proc.kill('SIGKILL');
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  /** What the StatefulSet controller does after a change of replicas: ordinals below it run, the rest get SIGTERM. */
  reconcile(): void {
    for (let i = 0; i < this.replicas; i++) {
      if (this.pods.has(i)) continue;
      const proc = spawn(
        process.execPath,
        [
          REPR_BIN,
          'worker',
          '--scheduler',
          this.schedulerUrl,
          '--name',
          `repr-worker-${i}`,
          '--executors',
          '1',
          '--data-dir',
          path.join(this.dataDir, `pod-${i}`),
          '--executor-property',
          'OSFamily=linux',
          '--executor-property',
          'pool=k8s',
        ],
        { stdio: 'ignore' },
      );
      const pod: Pod = { ordinal: i, proc };
      proc.once('exit', (code) => {
        pod.exited = code;
        this.pods.delete(i);
        this.events.push(`pod repr-worker-${i} exited ${code}`);
      });
      this.pods.set(i, pod);
      this.events.push(`pod repr-worker-${i} started`);
    }
    for (const [i, pod] of this.pods) {
      if (i >= this.replicas && pod.exited === undefined && !pod.proc.killed) {
        pod.proc.kill('SIGTERM');
        this.events.push(`pod repr-worker-${i} terminating`);
      }
    }
  }

  private scale() {
    return {
      kind: 'Scale',
      apiVersion: 'autoscaling/v1',
      metadata: { name: 'repr-worker', namespace: 'repr', resourceVersion: String(this.version) },
      spec: { replicas: this.replicas },
      status: { replicas: this.pods.size, selector: SELECTOR },
    };
  }

  private answer(req: http.IncomingMessage, res: http.ServerResponse): void {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const reply = (status: number, body: unknown) => res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(body));
      const status = (code: number, reason: string, message: string) =>
        reply(code, { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message, reason, code });
      const what = `${req.method} ${req.url}`;
      if (req.headers.authorization !== `Bearer ${TOKEN}`) {
        this.badRequests.push(`${what}: no token`);
        return status(401, 'Unauthorized', 'Unauthorized');
      }
      if (req.method === 'GET' && req.url === SCALE) return reply(200, this.scale());
      if (req.method === 'GET' && req.url === PODS) {
        // A pod exists (Pending) from the moment the controller creates it, before its container runs.
        const ordinals = new Set([...this.pods.keys(), ...Array.from({ length: this.replicas }, (_, i) => i)]);
        const items = [...ordinals].map((i) => ({
          metadata: {
            name: `repr-worker-${i}`,
            namespace: 'repr',
            labels: { 'app.kubernetes.io/name': 'repr', 'app.kubernetes.io/component': 'worker' },
          },
          status: { phase: this.pods.has(i) ? 'Running' : 'Pending' },
        }));
        return reply(200, { kind: 'PodList', apiVersion: 'v1', metadata: { resourceVersion: String(this.version) }, items });
      }
      if (req.method === 'PATCH' && req.url === SCALE) {
        if (req.headers['content-type'] !== 'application/merge-patch+json') {
          this.badRequests.push(`${what}: content-type ${req.headers['content-type']}`);
          return status(415, 'UnsupportedMediaType', 'the body must be a merge patch');
        }
        const body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as { metadata?: { resourceVersion?: string }; spec?: { replicas?: number } };
        const replicas = body.spec?.replicas;
        if (!Number.isInteger(replicas) || replicas! < 0) {
          this.badRequests.push(`${what}: replicas ${replicas}`);
          return status(422, 'Invalid', 'spec.replicas must be a non-negative integer');
        }
        if (body.metadata?.resourceVersion !== undefined && body.metadata.resourceVersion !== String(this.version)) {
          return status(409, 'Conflict', 'Operation cannot be fulfilled on statefulsets.apps "repr-worker": the object has been modified');
        }
        this.events.push(`replicas ${this.replicas} → ${replicas}`);
        this.replicas = replicas!;
        this.version++;
        this.reconcile();
        return reply(200, this.scale());
      }
      this.badRequests.push(`${what}: not a call the provider should make`);
      return status(404, 'NotFound', `${what} not found`);
    });
  }
}

const poolOf = (s: GetStatusResponse) => s.autoscalePools[0]!;

describe('autoscaling with the kubernetes provider', () => {
  let cluster: StatefulSetStandIn;
  let server: ServerProcess;
  let client: ReapiClient;
  let exec: ExecClient;

  before(async () => {
    const dir = tmpDir('repr-autoscale-k8s-');
    const ca = makeCertAuthority(path.join(dir, 'ca'));
    cluster = new StatefulSetStandIn(ca.server('kube-apiserver'), dir);
    const apiServer = await cluster.start();
    const kubeconfig = writeKubeconfig(apiServer, ca.cert, TOKEN);
    const config = path.join(dir, 'server.json');
    writeFileSync(
      config,
      JSON.stringify({
        autoscale: {
          enabled: true,
          tickSeconds: 0.5,
          pools: [
            {
              name: 'repr-worker',
              properties: { OSFamily: 'linux', pool: 'k8s' },
              provider: { type: 'kubernetes', namespace: 'repr', kind: 'StatefulSet', name: 'repr-worker', kubeconfig },
              minWorkers: 1,
              maxWorkers: 3,
              executorsPerWorker: 1,
              // Short cooldowns: the seed's own are tested on a fake clock in the policy's unit tests.
              scaleUpCooldownSeconds: 2,
              scaleDownCooldownSeconds: 4,
            },
          ],
        },
      }),
    );
    server = await startServerProcess(['--config', config, '--data-dir', path.join(dir, 'scheduler'), '--executors', '0']);
    // The StatefulSet exists with one pod before the scheduler, as after `kubectl apply -f deploy/`.
    cluster.schedulerUrl = server.url;
    cluster.reconcile();
    client = new ReapiClient({ target: server.address });
    exec = new ExecClient(server.address);
  });
  after(async () => {
    client?.close();
    exec?.close();
    await server?.stop();
    await cluster?.stop();
  });

  it('grows the StatefulSet for a burst, and shrinks it from its highest ordinals through drains, losing nothing', async () => {
    await waitForStatus(server.url, (s) => s.workers.length === 1, 30_000);
    const jobs = [];
    for (let i = 0; i < 40; i++) {
      const nonce = randomUUID();
      jobs.push({
        nonce,
        digest: await uploadAction(client, { argv: ['/bin/sh', '-c', `sleep 0.2; echo ${nonce}`], platform: { OSFamily: 'linux', pool: 'k8s' } }),
      });
    }
    const results = await Promise.all(jobs.map((j) => exec.execute(j.digest)));
    for (const r of results) assert.equal(r.response?.status?.code ?? Code.OK, Code.OK, r.response?.status?.message);
    // In one step or two, as the burst arrives over one tick or two.
    assert.ok(
      cluster.events.some((e) => /^replicas [12] → 3$/.test(e)),
      `grown to the maximum: ${cluster.events.join('; ')}`,
    );
    assert.ok(cluster.events.includes('pod repr-worker-2 started'));

    const shrunk = await waitForStatus(server.url, (s) => s.workers.length === 1 && poolOf(s).workers === 1 && poolOf(s).draining === 0, 60_000);
    assert.deepEqual(
      shrunk.workers.map((w) => w.name),
      ['repr-worker-0'],
      'ordinal 0 stays',
    );
    assert.equal(shrunk.completed, 40, 'one result per action');
    assert.equal(shrunk.requeued, 0, 'no action was handed back or lost with a pod');
    assert.equal(poolOf(shrunk).provider, 'kubernetes');
    // Highest ordinals first, and each pod stopped only once drained: it exits 0. With the burst done the forecast is
    // far below the pool, so one scale-down may take both pods (twice maxScaleDownStep); one at a time if a tick still
    // saw the burst's tail.
    const shrinking = (e: string) => {
      const m = /^replicas (\d+) → (\d+)$/.exec(e);
      return m ? Number(m[2]) < Number(m[1]) : /terminating|exited/.test(e);
    };
    const downs = cluster.events.filter(shrinking);
    const steps: { from: number; to: number; pods: string[] }[] = [];
    for (const e of downs) {
      const m = /^replicas (\d+) → (\d+)$/.exec(e);
      if (m) steps.push({ from: Number(m[1]), to: Number(m[2]), pods: [] });
      else steps.at(-1)?.pods.push(e);
    }
    assert.ok(downs.length > 0 && /^replicas /.test(downs[0]!), downs.join('; '));
    assert.deepEqual(
      steps.map((st) => [st.from, st.to]),
      steps.length === 1
        ? [[3, 1]]
        : [
            [3, 2],
            [2, 1],
          ],
      downs.join('; '),
    );
    for (const st of steps) {
      const gone = Array.from({ length: st.from - st.to }, (_, i) => `repr-worker-${st.to + i}`);
      assert.deepEqual([...st.pods].sort(), gone.flatMap((name) => [`pod ${name} exited 0`, `pod ${name} terminating`]).sort(), downs.join('; '));
      for (const name of gone) assert.ok(st.pods.indexOf(`pod ${name} terminating`) < st.pods.indexOf(`pod ${name} exited 0`), downs.join('; '));
    }
    assert.deepEqual(cluster.badRequests, []);
    // Its first pod, listed but not registered when the scheduler started, was counted as on its way: no worker was added on top of it.
    const changes = cluster.events.filter((e) => e.startsWith('replicas'));
    assert.ok(
      changes.every((e) => ['replicas 1 → 2', 'replicas 1 → 3', 'replicas 2 → 3', 'replicas 3 → 2', 'replicas 3 → 1', 'replicas 2 → 1'].includes(e)),
      changes.join('; '),
    );
    assert.equal(changes.filter((e) => shrinking(e) && e.endsWith('→ 1')).length, 1, `one way up and one way down: ${changes.join('; ')}`);
    const log = server.logs.join('');
    for (const name of ['repr-worker-1', 'repr-worker-2']) {
      assert.ok(log.indexOf(`"worker":"${name}"`) >= 0, `${name} was seen by the scheduler`);
    }
  });

  it('refuses to start, before listening, when the provider cannot reach a cluster', async () => {
    const dir = tmpDir('repr-autoscale-k8s-bad-');
    const config = path.join(dir, 'server.json');
    const provider = { type: 'kubernetes', namespace: 'repr', name: 'repr-worker', inCluster: true };
    writeFileSync(config, JSON.stringify({ autoscale: { enabled: true, pools: [{ name: 'repr-worker', provider }] } }));
    const env = { KUBERNETES_SERVICE_HOST: '' };
    const r = await runReprToEnd(['server', '--listen', '127.0.0.1:0', '--data-dir', path.join(dir, 'data'), '--config', config, '--executors', '0'], { env });
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /kubernetes provider: inCluster is set but this process is not in a pod/);
    assert.doesNotMatch(r.stdout + r.stderr, /repr server listening/);
  });
});
