import assert from 'node:assert/strict';
import os from 'node:os';
import path from 'node:path';
import { describe, it } from 'node:test';
import { Code, codeOf } from '../../../src/common/errors.js';
import { compileServerConfig, loadConfigFile } from '../../../src/config/config.js';
import { compileWorkerConfig } from '../../../src/config/worker-config.js';
import { DEFAULT_INPUT_LIMITS } from '../../../src/worker/input-root.js';
import { REPO_ROOT } from '../../../support/servers.js';

/** Runs `fn` with environment variables set (undefined: unset), then puts them back. */
function withEnv<T>(vars: Record<string, string | undefined>, fn: () => T): T {
  const saved = Object.fromEntries(Object.keys(vars).map((k) => [k, process.env[k]]));
  const apply = (vs: Record<string, string | undefined>) => {
    for (const [k, v] of Object.entries(vs)) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
  };
  apply(vars);
  try {
    return fn();
  } finally {
    apply(saved);
  }
}

describe('compileWorkerConfig', () => {
  it('accepts the example config, which shows every field', () => {
    const c = compileWorkerConfig(loadConfigFile(path.join(REPO_ROOT, 'examples', 'worker.json')));
    assert.deepEqual(c.scheduler, ['grpcs://scheduler.example.com:8980']);
    assert.equal(c.cas, 'grpcs://cas.example.com:8980');
    assert.equal(c.tls?.certFile, '/etc/repr/tls/worker-1.pem');
    assert.equal(c.name, 'worker-1');
    assert.deepEqual(c.cache, { directory: '/var/lib/repr-worker/cas', limitBytes: 50 * 2 ** 30 });
    assert.equal(c.workDir, '/var/lib/repr-worker/work');
    assert.deepEqual(c.execution.properties, { OSFamily: ['linux'], pool: ['default', 'big'] });
    assert.equal(c.execution.memoryBytes, 16 * 2 ** 30);
    assert.equal(c.execution.runWrites, 'overlay');
    assert.equal(c.execution.sandbox.maxWriteBytes, 16 * 2 ** 30);
  });

  it('fills in every default from one place, the same as the server for what executors share', () => {
    const c = withEnv({ REPR_DATA_DIR: '/data', REPR_TOKEN: undefined }, () => compileWorkerConfig({ scheduler: 'sched:8980', name: 'w 1' }));
    assert.deepEqual(c.scheduler, ['grpc://sched:8980']);
    assert.equal(c.cas, undefined);
    assert.equal(c.token, undefined);
    assert.equal(c.dataDir, '/data/workers/w_1');
    assert.equal(c.cache.directory, '/data/workers/w_1/cas');
    assert.equal(c.cache.limitBytes, 10 * 2 ** 30);
    assert.equal(c.workDir, '/data/workers/w_1/work');
    assert.equal(c.drainTimeoutSeconds, 60);
    assert.equal(c.logLevel, 'info');
    const ex = c.execution;
    assert.equal(ex.executors, os.cpus().length);
    assert.equal(ex.cpus, os.cpus().length);
    assert.equal(ex.memoryBytes, os.totalmem());
    assert.deepEqual(ex.properties, { OSFamily: ['linux'] });
    assert.equal(ex.allowNetwork, false);
    assert.equal(ex.defaultTimeoutSeconds, 900);
    assert.equal(ex.maxTimeoutSeconds, 3600);
    assert.deepEqual({ maxNodes: ex.maxInputNodes, maxBytes: ex.maxInputBytes, maxDepth: ex.maxInputDepth }, DEFAULT_INPUT_LIMITS);
    assert.deepEqual(ex.sandbox, {});
    assert.equal(ex.runWrites, 'overlay');

    const server = compileServerConfig({}).execution;
    for (const key of [
      'executors',
      'cpus',
      'memoryBytes',
      'allowNetwork',
      'defaultTimeoutSeconds',
      'maxTimeoutSeconds',
      'maxInputNodes',
      'maxInputBytes',
      'maxInputDepth',
      'sandbox',
    ] as const) {
      assert.deepEqual(ex[key], server[key], key);
    }
  });

  it('names the worker after the host by default, so a restart finds the same directory, and takes the token from $REPR_TOKEN', () => {
    const c = withEnv({ REPR_TOKEN: 'from-the-environment', REPR_DATA_DIR: '/data' }, () => compileWorkerConfig({ scheduler: 'grpc://s:1' }));
    assert.equal(c.name, os.hostname());
    assert.equal(c.dataDir, path.join('/data/workers', os.hostname().replace(/[^\w.-]/g, '_')));
    assert.equal(c.workersDir, '/data/workers', 'its neighbours there are swept for staleness');
    assert.equal(c.staleDays, 7);
    const elsewhere = withEnv({ REPR_DATA_DIR: '/data' }, () => compileWorkerConfig({ scheduler: 'grpc://s:1', dataDir: '/srv/w' }));
    assert.equal(elsewhere.workersDir, undefined, 'what lives beside a data directory given elsewhere is not swept');
    assert.equal(c.token, 'from-the-environment');
    const given = withEnv({ REPR_TOKEN: 'from-the-environment' }, () => compileWorkerConfig({ scheduler: 'grpc://s:1', token: 'given' }));
    assert.equal(given.token, 'given');
  });

  it('dials grpcs:// with the TLS files given, each falling back to $REPR_TLS_CA, $REPR_TLS_CERT, $REPR_TLS_KEY', () => {
    const env = { REPR_TLS_CA: '/env/ca.pem', REPR_TLS_CERT: '/env/cert.pem', REPR_TLS_KEY: '/env/key.pem' };
    const given = withEnv(env, () => compileWorkerConfig({ scheduler: 'grpcs://s:1', tls: { caFile: '/etc/ca.pem' } }));
    assert.deepEqual(given.scheduler, ['grpcs://s:1']);
    assert.deepEqual(given.tls, { caFile: '/etc/ca.pem', certFile: '/env/cert.pem', keyFile: '/env/key.pem' });
    const none = withEnv({ REPR_TLS_CA: undefined, REPR_TLS_CERT: undefined, REPR_TLS_KEY: undefined }, () =>
      compileWorkerConfig({ scheduler: 'grpcs://s:1' }),
    );
    assert.equal(none.tls, undefined, "no files: Node's roots, no client certificate");
    // The environment holds defaults for grpcs:// channels; a plaintext worker is not refused for them.
    assert.deepEqual(withEnv(env, () => compileWorkerConfig({ scheduler: 'grpc://s:1' })).scheduler, ['grpc://s:1']);
    assert.equal(compileWorkerConfig({ scheduler: 'grpc://s:1', cas: 'grpcs://c:2', tls: { caFile: '/ca' } }).tls?.caFile, '/ca');
  });

  it('refuses a missing or undialable scheduler and unknown fields with INVALID_ARGUMENT naming them', () => {
    const refused = (input: unknown, pattern: RegExp) =>
      assert.throws(
        () => compileWorkerConfig(input),
        (e: unknown) => codeOf(e) === Code.INVALID_ARGUMENT && pattern.test((e as Error).message),
      );
    refused({}, /scheduler: missing/);
    refused({ scheduler: 'http://s:80' }, /scheduler: .*unsupported scheme http/);
    refused({ scheduler: 's:1', cas: 'nope' }, /cas: "nope" is not a server address/);
    refused({ scheduler: 's:1', cacheBytes: 5 }, /unrecognized key.*cacheBytes/i);
    refused({ scheduler: 's:1', execution: { runWrites: 'tmpfs' } }, /execution\.runWrites/);
    refused({ scheduler: 's:1', execution: { maxInputNodes: 0 } }, /execution\.maxInputNodes/);
    refused({ scheduler: 'grpc://s:1', tls: { caFile: '/ca.pem' } }, /tls is set, but neither scheduler nor cas is a grpcs:\/\/ address/);
    refused({ scheduler: 'grpcs://s:1', tls: { keyFile: '/k.pem' } }, /tls: a client certificate needs both certFile and keyFile/);
  });

  it('takes several schedulers as a list or separated by commas, each checked as one is, all TLS or all plaintext', () => {
    const schedulers = (scheduler: unknown) => compileWorkerConfig({ scheduler }).scheduler;
    assert.deepEqual(schedulers('a:1, grpc://b:2,,'), ['grpc://a:1', 'grpc://b:2']);
    assert.deepEqual(schedulers(['a:1', 'b:2,c:3']), ['grpc://a:1', 'grpc://b:2', 'grpc://c:3']);
    assert.deepEqual(schedulers(['grpcs://a:1', 'GRPCS://b:2']), ['grpcs://a:1', 'grpcs://b:2']);
    assert.deepEqual(schedulers(['a:1', 'grpc://a:1']), ['grpc://a:1'], 'one scheduler written twice is tried once');
    const refused = (scheduler: unknown, pattern: RegExp) =>
      assert.throws(
        () => compileWorkerConfig({ scheduler }),
        (e: unknown) => codeOf(e) === Code.INVALID_ARGUMENT && pattern.test((e as Error).message),
      );
    refused(['a:1', 'http://b:2'], /scheduler: "http:\/\/b:2": unsupported scheme http/);
    refused('a:1,nope', /scheduler: "nope" is not a server address/);
    refused([], /scheduler: empty; the scheduler to take work from/);
    refused(' , ', /scheduler: empty/);
    refused(8980, /scheduler: expected the scheduler to take work from, as grpc:\/\/host:port/);
    refused(['grpcs://a:1', 'grpc://b:2'], /scheduler: mixes grpcs:\/\/ \(grpcs:\/\/a:1\) and plaintext \(grpc:\/\/b:2\) schedulers; .*in the clear/);
  });
});
