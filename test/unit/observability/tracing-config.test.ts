import assert from 'node:assert/strict';
import path from 'node:path';
import { describe, it } from 'node:test';
import { Code, codeOf } from '../../../src/common/errors.js';
import { compileServerConfig, loadConfigFile } from '../../../src/config/config.js';
import { compileWorkerConfig } from '../../../src/config/worker-config.js';
import { resolveTracing } from '../../../src/observability/tracing-config.js';
import { REPO_ROOT } from '../../../support/servers.js';

const none = { sampleRatio: 1 };

describe('resolveTracing', () => {
  it('is off without an endpoint in the config or the environment', () => {
    assert.equal(resolveTracing(none, 'repr-server', {}), undefined);
  });

  it("posts to the configured base URL's /v1/traces, with the default service name", () => {
    for (const base of ['http://collector:4318', 'http://collector:4318/']) {
      assert.deepEqual(resolveTracing({ ...none, otlpEndpoint: base }, 'repr-server', {}), {
        otlpEndpoint: base,
        tracesUrl: 'http://collector:4318/v1/traces',
        serviceName: 'repr-server',
        sampleRatio: 1,
      });
    }
  });

  it('takes the standard variables: the traces URL as it is, else a base URL; the config wins over both', () => {
    const env = { OTEL_EXPORTER_OTLP_ENDPOINT: 'https://base:4318/otlp', OTEL_SERVICE_NAME: 'build-farm' };
    assert.equal(resolveTracing(none, 'repr-worker', env)?.tracesUrl, 'https://base:4318/otlp/v1/traces');
    assert.equal(resolveTracing(none, 'repr-worker', env)?.serviceName, 'build-farm');
    const both = { ...env, OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: 'http://traces:4318/custom' };
    assert.equal(resolveTracing(none, 'repr-worker', both)?.tracesUrl, 'http://traces:4318/custom');
    assert.equal(resolveTracing({ ...none, otlpEndpoint: 'http://mine:4318' }, 'repr-worker', both)?.tracesUrl, 'http://mine:4318/v1/traces');
    assert.equal(resolveTracing({ ...none, serviceName: 'given' }, 'repr-worker', env)?.serviceName, 'given');
  });

  it('is off when OTEL_SDK_DISABLED is true, whatever else is set', () => {
    assert.equal(resolveTracing({ ...none, otlpEndpoint: 'http://c:4318' }, 'repr-server', { OTEL_SDK_DISABLED: 'TRUE' }), undefined);
  });

  it('refuses a variable that is not an http(s) URL, naming it and the flag that replaces it', () => {
    assert.throws(
      () => resolveTracing(none, 'repr-server', { OTEL_EXPORTER_OTLP_ENDPOINT: 'collector:4318' }),
      (e: Error) =>
        codeOf(e) === Code.INVALID_ARGUMENT && e.message.includes('OTEL_EXPORTER_OTLP_ENDPOINT="collector:4318"') && e.message.includes('--otlp-endpoint'),
    );
  });
});

describe('tracing in the server and worker configs', () => {
  it('reads the examples', () => {
    const server = compileServerConfig(loadConfigFile(path.join(REPO_ROOT, 'examples', 'server.json')));
    assert.deepEqual(server.tracing, {
      otlpEndpoint: 'http://otel-collector.example.com:4318',
      tracesUrl: 'http://otel-collector.example.com:4318/v1/traces',
      serviceName: 'repr-server',
      sampleRatio: 0.25,
    });
    const worker = compileWorkerConfig(loadConfigFile(path.join(REPO_ROOT, 'examples', 'worker.json')));
    assert.equal(worker.tracing?.serviceName, 'repr-worker');
  });

  it('refuses an endpoint that is not an http(s) URL, and a ratio outside 0..1, naming the field and the flag', () => {
    assert.throws(
      () => compileServerConfig({ tracing: { otlpEndpoint: 'grpc://collector:4317' } }),
      (e: Error) => codeOf(e) === Code.INVALID_ARGUMENT && /tracing\.otlpEndpoint: .*http:\/\/.*--otlp-endpoint/.test(e.message),
    );
    assert.throws(
      () => compileWorkerConfig({ scheduler: 'grpc://s:8980', tracing: { otlpEndpoint: 'http://c:4318', sampleRatio: 2 } }),
      (e: Error) => codeOf(e) === Code.INVALID_ARGUMENT && e.message.includes('tracing.sampleRatio'),
    );
  });
});
