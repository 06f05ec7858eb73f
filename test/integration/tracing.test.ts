import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { type Interceptor, InterceptingCall } from '@grpc/grpc-js';
import type { Digest } from '../../src/common/digest.js';
import { Code } from '../../src/common/errors.js';
import { ExecClient, uploadAction } from '../../src/client/execution-client.js';
import { ReapiClient } from '../../src/reapi/reapi-client.js';
import { type ReceivedSpan, type OtlpReceiver, startOtlpReceiver } from '../../support/otlp-receiver.js';
import { type ServerProcess, spawnWorker, startServerProcess, type WorkerProcess } from '../../support/servers.js';
import { tmpDir } from '../../support/tmp.js';
import { runReprToEnd } from '../../support/spawn-server.js';

const EXECUTE = 'build.bazel.remote.execution.v2.Execution/Execute';
const PHASES = ['fetch inputs', 'run', 'upload outputs'];
const OTLP_SERVER = 2;
/**
 * The SDK anchors each span's clock to Date.now() (whole milliseconds) when
 * it starts: a span may seem to start up to a millisecond before the one it
 * followed ends.
 */
const SLACK_NS = 2_000_000n;

/** Sends a W3C traceparent on every call, as a client that traces its own work would. */
function sendTraceparent(traceparent: string): Interceptor {
  return (options, nextCall) =>
    new InterceptingCall(nextCall(options), {
      start: (metadata, listener, next) => {
        metadata.set('traceparent', traceparent);
        next(metadata, listener);
      },
    });
}

/** The one span of a trace with this name. */
function one(spans: ReceivedSpan[], name: string): ReceivedSpan {
  const found = spans.filter((s) => s.name === name);
  assert.equal(found.length, 1, `one "${name}" span, found ${found.length} among ${spans.map((s) => s.name).join(', ')}`);
  return found[0]!;
}

/** An action of its own (the salt), so it never comes from the cache of an earlier test. */
function action(client: ReapiClient): Promise<Digest> {
  return uploadAction(client, {
    argv: ['/bin/sh', '-c', 'tr a-z A-Z < in.txt > out.txt'],
    inputs: { 'in.txt': 'traced' },
    outputFiles: ['out.txt'],
    salt: randomBytes(8).toString('hex'),
  });
}

/** The phases of one execution: each under `execute`, and one after the other. */
function checkPhases(trace: ReceivedSpan[], execute: ReceivedSpan, service: string): void {
  const phases = PHASES.map((name) => one(trace, name));
  for (const p of phases) {
    assert.equal(p.parentSpanId, execute.spanId, `${p.name} is under execute`);
    assert.equal(p.service, service, `${p.name} comes from ${service}`);
    assert.ok(p.startNs <= p.endNs);
  }
  for (let i = 1; i < phases.length; i++) {
    assert.ok(phases[i - 1]!.endNs <= phases[i]!.startNs + SLACK_NS, `${phases[i - 1]!.name} ends before ${phases[i]!.name}`);
  }
  assert.equal(phases[1]!.attributes['process.exit_code'], 0);
}

describe('tracing', () => {
  describe('a scheduler and a worker that trace to one OTLP receiver', () => {
    let rx: OtlpReceiver;
    let server: ServerProcess;
    let worker: WorkerProcess;
    let client: ReapiClient;
    before(async () => {
      rx = await startOtlpReceiver();
      server = await startServerProcess(['--data-dir', tmpDir(), '--executors', '0', '--otlp-endpoint', rx.url]);
      worker = await spawnWorker(server.url, ['--name', 'traced', '--data-dir', tmpDir(), '--otlp-endpoint', rx.url]);
      client = new ReapiClient({ target: server.address });
    });
    after(async () => {
      client.close();
      await worker.stop('SIGKILL');
      await server.stop('SIGKILL');
      await rx.close();
    });

    it("makes one trace of an Execute, under the client's span: the call, queue, execute, and the worker's fetch inputs, run, upload outputs", async () => {
      const digest = await action(client);
      const traceId = randomBytes(16).toString('hex');
      const clientSpan = randomBytes(8).toString('hex');
      const exec = new ExecClient(server.address, '', { interceptors: [sendTraceparent(`00-${traceId}-${clientSpan}-01`)] });
      const r = await exec.execute(digest).finally(() => exec.close());
      assert.equal(r.response?.status?.code ?? Code.OK, Code.OK, r.response?.status?.message);
      assert.equal(r.response?.result?.exitCode, 0);

      // Stopping flushes: the worker after its drain, the server in stop().
      assert.equal(await worker.stop(), 0);
      assert.equal(await server.stop(), 0);
      await rx.waitFor((spans) => spans.filter((s) => s.traceId === traceId && PHASES.includes(s.name)).length === PHASES.length, 10_000);
      assert.deepEqual(rx.rejected, []);
      const trace = rx.spans.filter((s) => s.traceId === traceId);

      const call = one(trace, EXECUTE);
      assert.equal(call.parentSpanId, clientSpan, 'the call continues the traceparent the client sent');
      assert.equal(call.kind, OTLP_SERVER);
      assert.equal(call.service, 'repr-server');
      assert.equal(call.attributes['rpc.system'], 'grpc');
      assert.equal(call.attributes['rpc.grpc.status_code'], Code.OK);
      const lookup = one(trace, 'action cache lookup');
      assert.equal(lookup.parentSpanId, call.spanId);
      assert.equal(lookup.attributes['repr.cache_hit'], false);
      const queue = one(trace, 'queue');
      assert.equal(queue.parentSpanId, call.spanId);
      const execute = one(trace, 'execute');
      assert.equal(execute.parentSpanId, call.spanId);
      assert.equal(execute.attributes['repr.executor'], 'traced/0');
      assert.ok(queue.endNs <= execute.startNs + SLACK_NS, 'the wait ends before the execution starts');
      checkPhases(trace, execute, 'repr-worker');
      assert.ok(execute.endNs <= call.endNs + SLACK_NS, 'the call ends after its execution');
    });
  });

  describe('a server with built-in executors, tracing by OTEL_EXPORTER_OTLP_ENDPOINT', () => {
    let rx: OtlpReceiver;
    let server: ServerProcess;
    let client: ReapiClient;
    before(async () => {
      rx = await startOtlpReceiver();
      process.env.OTEL_EXPORTER_OTLP_ENDPOINT = rx.url;
      try {
        server = await startServerProcess(['--data-dir', tmpDir(), '--executors', '1']);
      } finally {
        delete process.env.OTEL_EXPORTER_OTLP_ENDPOINT;
      }
      client = new ReapiClient({ target: server.address });
    });
    after(async () => {
      client.close();
      await server.stop('SIGKILL');
      await rx.close();
    });

    it('starts a trace per untraced call, with its phases; a cache hit has the lookup only; a miss is no server error', async () => {
      const digest = await action(client);
      const exec = new ExecClient(server.address);
      try {
        assert.equal((await exec.execute(digest)).response?.result?.exitCode, 0);
        assert.equal((await exec.execute(digest)).response?.cachedResult, true);
      } finally {
        exec.close();
      }
      await assert.rejects(client.getActionResult(await action(client)), (e: { code?: number }) => e.code === Code.NOT_FOUND);
      assert.equal(await server.stop(), 0);
      await rx.waitFor((spans) => spans.some((s) => s.name === 'upload outputs'), 10_000);

      const calls = rx.spans.filter((s) => s.name === EXECUTE);
      assert.equal(calls.length, 2);
      for (const c of calls) assert.equal(c.parentSpanId, '', 'without a traceparent the call starts its trace');
      const [first, second] = calls.sort((a, b) => (a.startNs < b.startNs ? -1 : 1)) as [ReceivedSpan, ReceivedSpan];
      assert.notEqual(first.traceId, second.traceId);
      const executed = rx.spans.filter((s) => s.traceId === first.traceId);
      assert.equal(one(executed, 'action cache lookup').attributes['repr.cache_hit'], false);
      const execute = one(executed, 'execute');
      assert.equal(one(executed, 'queue').parentSpanId, first.spanId);
      checkPhases(executed, execute, 'repr-server');
      const hit = rx.spans.filter((s) => s.traceId === second.traceId);
      assert.deepEqual(hit.map((s) => s.name).sort(), ['action cache lookup', EXECUTE]);
      assert.equal(one(hit, 'action cache lookup').attributes['repr.cache_hit'], true);

      const miss = one(rx.spans, 'build.bazel.remote.execution.v2.ActionCache/GetActionResult');
      assert.equal(miss.attributes['rpc.grpc.status_code'], Code.NOT_FOUND);
      assert.equal(miss.status.code, 0, 'NOT_FOUND is an answer, not a failure of the server');
    });
  });

  it('refuses an endpoint that is not an http(s) URL in one line naming the flag, for the server and the worker', async () => {
    for (const args of [
      ['server', '--listen', '127.0.0.1:0', '--data-dir', tmpDir()],
      ['worker', '--scheduler', 'grpc://127.0.0.1:1', '--data-dir', tmpDir()],
    ]) {
      const { code, stderr } = await runReprToEnd([...args, '--otlp-endpoint', 'localhost:4318']);
      assert.equal(code, 2, stderr);
      assert.equal(stderr.trim().split('\n').length, 1, stderr);
      assert.match(stderr, /^repr: invalid configuration: tracing\.otlpEndpoint: must be an http:\/\/ or https:\/\/ URL.*--otlp-endpoint/);
    }
  });

  describe('tracing off (the default)', () => {
    it('sends nothing, not even to the default OTLP endpoint', async () => {
      // The exporter's default endpoint is localhost:4318: a server that traced
      // without being asked would send there, so that port is watched.
      const rx = await startOtlpReceiver(4318);
      const saved = Object.fromEntries(Object.entries(process.env).filter(([k]) => k.startsWith('OTEL_')));
      for (const k of Object.keys(saved)) delete process.env[k];
      let server: ServerProcess | undefined;
      let client: ReapiClient | undefined;
      try {
        server = await startServerProcess(['--data-dir', tmpDir(), '--executors', '1']);
        client = new ReapiClient({ target: server.address });
        const exec = new ExecClient(server.address, '', {
          interceptors: [sendTraceparent(`00-${randomBytes(16).toString('hex')}-${randomBytes(8).toString('hex')}-01`)],
        });
        assert.equal((await exec.execute(await action(client)).finally(() => exec.close())).response?.result?.exitCode, 0);
        assert.equal(await server.stop(), 0);
        assert.ok(!server.logs.some((l) => l.includes('tracing on')), 'the server says nothing of tracing');
        assert.equal(rx.requests, 0);
      } finally {
        Object.assign(process.env, saved);
        client?.close();
        await server?.stop('SIGKILL');
        await rx.close();
      }
    });
  });
});
