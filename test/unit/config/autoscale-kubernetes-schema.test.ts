import assert from 'node:assert/strict';
import { it } from 'node:test';
import { Code, type ReprError } from '../../../src/common/errors.js';
import { kubernetesProviderSchema, toKubernetesProviderConfig } from '../../../src/config/autoscale-kubernetes-schema.js';
import { parseConfig } from '../../../src/config/schema.js';

it('fills in a kubernetes provider: the default namespace, a StatefulSet, a 30 s request timeout', () => {
  const parsed = parseConfig(kubernetesProviderSchema, { type: 'kubernetes', name: 'repr-worker', inCluster: true, executors: 4 });
  assert.equal(parsed.executors, 4, "the pool's executorsPerWorker, read by the autoscale schema");
  assert.deepEqual(toKubernetesProviderConfig(parsed), {
    namespace: 'default',
    kind: 'StatefulSet',
    name: 'repr-worker',
    inCluster: true,
    requestTimeoutSeconds: 30,
  });
});

it('refuses names Kubernetes would refuse, unknown fields, and both kubeconfig and inCluster, naming each field', () => {
  const bad = (input: unknown): string => {
    try {
      parseConfig(kubernetesProviderSchema, input);
    } catch (e) {
      assert.equal((e as ReprError).code, Code.INVALID_ARGUMENT);
      return (e as Error).message;
    }
    assert.fail(`accepted ${JSON.stringify(input)}`);
  };
  assert.match(bad({ type: 'kubernetes', name: 'Repr_Worker' }), /name: must be a Kubernetes object name/);
  assert.match(bad({ type: 'kubernetes', name: 'w', namespace: 'a.b' }), /namespace: must be a Kubernetes namespace name/);
  assert.match(bad({ type: 'kubernetes', name: 'w', kind: 'DaemonSet' }), /kind: Invalid enum value. Expected 'StatefulSet' \| 'Deployment'/);
  assert.match(bad({ type: 'kubernetes', name: 'w', kubeconfig: '/k', inCluster: true }), /inCluster: give kubeconfig or inCluster, not both/);
  assert.match(bad({ type: 'kubernetes', name: 'w', replicas: 3 }), /Unrecognized key\(s\) in object: 'replicas'/);
  assert.match(bad({ type: 'kubernetes', name: 'w', pools: { big: { name: 'x', size: 1 } } }), /pools\.big: Unrecognized key/);
});
