import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { defaultPolicy } from '../../../src/autoscale/policy.js';
import { Code, ReprError } from '../../../src/common/errors.js';
import { compileServerConfig } from '../../../src/config/config.js';

const pool = (extra: Record<string, unknown> = {}) => ({ name: 'small', provider: { type: 'process' }, ...extra });
const compile = (autoscale: unknown) => compileServerConfig({ dataDir: '/tmp/x', autoscale });

function refused(autoscale: unknown, message: RegExp): void {
  assert.throws(
    () => compile(autoscale),
    (e: unknown) => e instanceof ReprError && e.code === Code.INVALID_ARGUMENT && message.test(e.message),
  );
}

describe('autoscale config', () => {
  it('is off by default, and fills a pool with the seed policy, executorsPerWorker from the provider', () => {
    assert.deepEqual(compile(undefined).autoscale, { enabled: false, tickSeconds: 5, pools: [] });
    const c = compile({ enabled: true, pools: [pool({ provider: { type: 'process', executors: 2 }, maxWorkers: 4 })] }).autoscale;
    const p = c.pools[0]!;
    assert.deepEqual(p.properties, { OSFamily: ['linux'] });
    assert.deepEqual(p.provider, { type: 'process', executors: 2, workerArgs: [], drainTimeoutSeconds: 60 });
    assert.deepEqual(p.policy, { ...defaultPolicy, maxWorkers: 4, executorsPerWorker: 2 });
  });

  it('takes a kubernetes pool, executorsPerWorker from the provider', () => {
    const c = compile({ enabled: true, pools: [pool({ provider: { type: 'kubernetes', name: 'repr-worker', inCluster: true, executors: 8 } })] }).autoscale;
    const p = c.pools[0]!;
    assert.deepEqual(p.provider, {
      type: 'kubernetes',
      namespace: 'default',
      kind: 'StatefulSet',
      name: 'repr-worker',
      inCluster: true,
      requestTimeoutSeconds: 30,
      executors: 8,
    });
    assert.equal(p.policy.executorsPerWorker, 8);
  });

  it('names what is wrong and where', () => {
    refused({ enabled: true }, /autoscale\.pools: autoscale is enabled but has no pools/);
    refused({ enabled: true, pools: [pool({ minWorkers: 5, maxWorkers: 2 })] }, /autoscale\.pools\.0\.minWorkers: minWorkers 5 is above maxWorkers 2/);
    refused({ enabled: true, pools: [pool({ maxWorker: 2 })] }, /autoscale\.pools\.0: Unrecognized key\(s\) in object: 'maxWorker'/);
    refused({ enabled: true, pools: [pool({ name: 'Big Pool' })] }, /autoscale\.pools\.0\.name: name must be 1 to 32 lowercase/);
    refused({ enabled: true, pools: [pool(), pool({ name: 'small-x' })] }, /pools\.1\.name: pool name small-x clashes with pool small/);
    refused({ enabled: true, pools: [pool({ provider: { type: 'ec2' } })] }, /provider\.type must be 'process', 'command' or 'kubernetes'/);
    refused(
      { enabled: true, pools: [pool({ provider: { type: 'kubernetes', name: 'w', kubeconfig: '/k', inCluster: true } })] },
      /provider\.inCluster: give kubeconfig or inCluster, not both/,
    );
    refused({ enabled: true, pools: [pool({ provider: { type: 'kubernetes', name: 'Workers_1' } })] }, /provider\.name: must be a Kubernetes object name/);
    refused(
      { enabled: true, pools: [pool({ provider: { type: 'command', add: ['up', '{count}'], remove: ['down'] } })] },
      /provider\.remove: remove needs an item "\{names\}"/,
    );
    assert.throws(
      () => compileServerConfig({ dataDir: '/tmp/x', execution: { enabled: false }, autoscale: { enabled: true, pools: [pool()] } }),
      /autoscale\.enabled needs execution\.enabled/,
    );
  });
});
