import assert from 'node:assert/strict';
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { describe, it } from 'node:test';
import { Writable } from 'node:stream';
import { Registry } from 'prom-client';
import { Code, codeOf } from '../../../src/common/errors.js';
import { createLogger, type Logger, silentLogger } from '../../../src/common/logger.js';
import {
  createTelemetrySinks,
  FanoutTelemetrySink,
  JsonlTelemetrySink,
  LogTelemetrySink,
  PrometheusTelemetrySink,
  type RunRecord,
  type TelemetrySink,
  telemetrySinkSchema,
} from '../../../src/observability/telemetry.js';
import { tmpDir } from '../../../support/tmp.js';

function run(over: Partial<RunRecord> = {}): RunRecord {
  return {
    runId: 'r1',
    executor: 'w1/0',
    argv: ['make', '-j8'],
    exitCode: 0,
    status: Code.OK,
    queries: 100,
    mappedHits: 60,
    bytesFetched: 4096,
    bytesUploaded: 512,
    blockedOnClientMs: 250,
    setupMs: 40,
    runMs: 1500,
    top: [{ path: 'src/big.c', micros: 1200, bytes: 4000 }],
    ...over,
  };
}

/** A logger whose lines the test can read. */
function capturingLogger(): { log: Logger; lines: Record<string, unknown>[] } {
  const lines: Record<string, unknown>[] = [];
  const dest = new Writable({
    write(chunk: Buffer, _enc, cb) {
      for (const l of chunk.toString().split('\n')) if (l) lines.push(JSON.parse(l) as Record<string, unknown>);
      cb();
    },
  });
  return { log: createLogger('info', dest), lines };
}

describe('LogTelemetrySink', () => {
  it('writes one structured info line per run', async () => {
    const { log, lines } = capturingLogger();
    new LogTelemetrySink(log).record(run({ status: Code.DEADLINE_EXCEEDED }));
    await new Promise((r) => setImmediate(r));
    assert.equal(lines.length, 1);
    assert.equal(lines[0]!.level, 30);
    assert.equal(lines[0]!.msg, 'run finished');
    const r = lines[0]!.run as Record<string, unknown>;
    assert.equal(r.runId, 'r1');
    assert.equal(r.statusName, 'DEADLINE_EXCEEDED');
    assert.deepEqual(r.argv, ['make', '-j8']);
  });
});

describe('JsonlTelemetrySink', () => {
  it('appends one JSON line per run, creating the directory, and flushes on close', async () => {
    const file = path.join(tmpDir(), 'a', 'b', 'runs.jsonl');
    const sink = new JsonlTelemetrySink(file, silentLogger(), () => new Date('2030-01-02T03:04:05Z'));
    for (let i = 0; i < 50; i++) sink.record(run({ runId: `r${i}`, exitCode: i % 3 }));
    await sink.close();
    const lines = (await readFile(file, 'utf8')).trimEnd().split('\n');
    assert.equal(lines.length, 50);
    const parsed = lines.map((l) => JSON.parse(l) as RunRecord & { time: string });
    assert.deepEqual(
      parsed.map((p) => p.runId),
      Array.from({ length: 50 }, (_, i) => `r${i}`),
    );
    assert.equal(parsed[0]!.time, '2030-01-02T03:04:05.000Z');
    assert.deepEqual(parsed[4]!.top, run().top);
    assert.equal(parsed[4]!.exitCode, 1);
  });

  it('appends to an existing file', async () => {
    const file = path.join(tmpDir(), 'runs.jsonl');
    await writeFile(file, '{"old":true}\n');
    const sink = new JsonlTelemetrySink(file, silentLogger());
    sink.record(run());
    await sink.close();
    const lines = (await readFile(file, 'utf8')).trimEnd().split('\n');
    assert.equal(lines.length, 2);
    assert.equal((JSON.parse(lines[1]!) as RunRecord).runId, 'r1');
  });

  it('neither throws nor rejects when the file cannot be written', async () => {
    // A regular file where the parent directory should be.
    const blocker = path.join(tmpDir(), 'blocker');
    await writeFile(blocker, 'x');
    const { log, lines } = capturingLogger();
    const sink = new JsonlTelemetrySink(path.join(blocker, 'runs.jsonl'), log);
    assert.doesNotThrow(() => sink.record(run()));
    await sink.close();
    assert.ok(lines.some((l) => l.msg === 'cannot write telemetry; records dropped'));
  });
});

describe('PrometheusTelemetrySink', () => {
  it('counts runs by status and exit code and sums their costs', async () => {
    const registry = new Registry();
    const sink = new PrometheusTelemetrySink(registry);
    sink.record(run());
    sink.record(run({ exitCode: 2, bytesFetched: 1000 }));
    sink.record(run({ status: Code.DEADLINE_EXCEEDED, exitCode: -1, runMs: 90_000 }));
    const text = await registry.metrics();
    assert.match(text, /^repr_run_total\{status="OK",exit="0"\} 1$/m);
    assert.match(text, /^repr_run_total\{status="OK",exit="2"\} 1$/m);
    assert.match(text, /^repr_run_total\{status="DEADLINE_EXCEEDED",exit="-1"\} 1$/m);
    assert.match(text, /^repr_run_queries_total 300$/m);
    assert.match(text, /^repr_run_mapped_hits_total 180$/m);
    assert.match(text, /^repr_run_fetched_bytes_total 9192$/m);
    assert.match(text, /^repr_run_uploaded_bytes_total 1536$/m);
    assert.match(text, /^repr_run_blocked_on_client_seconds_count 3$/m);
    assert.match(text, /^repr_run_blocked_on_client_seconds_sum 0\.75$/m);
    assert.match(text, /^repr_run_setup_seconds_count 3$/m);
    assert.match(text, /^repr_run_duration_seconds_sum 93$/m);
    // Nothing per file: paths would be unbounded label values.
    assert.doesNotMatch(text, /big\.c/);
  });
});

describe('FanoutTelemetrySink', () => {
  it('gives every record to every sink, even when one throws, and closes them all', async () => {
    const got: string[] = [];
    let closed = 0;
    const ok = (tag: string): TelemetrySink => ({
      record: (r) => got.push(`${tag}:${r.runId}`),
      close: async () => void closed++,
    });
    const broken: TelemetrySink = {
      record: () => {
        throw new Error('boom');
      },
    };
    const fan = new FanoutTelemetrySink([ok('a'), broken, ok('b')], silentLogger());
    fan.record(run({ runId: 'x' }));
    await fan.close();
    assert.deepEqual(got, ['a:x', 'b:x']);
    assert.equal(closed, 2);
  });
});

describe('telemetry config', () => {
  it('accepts the three sink types and rejects unknown ones or missing fields', () => {
    assert.deepEqual(telemetrySinkSchema.parse({ type: 'jsonl', path: '/tmp/x.jsonl' }), { type: 'jsonl', path: '/tmp/x.jsonl' });
    assert.ok(telemetrySinkSchema.safeParse({ type: 'log' }).success);
    assert.ok(telemetrySinkSchema.safeParse({ type: 'prometheus' }).success);
    assert.equal(telemetrySinkSchema.safeParse({ type: 'statsd' }).success, false);
    assert.equal(telemetrySinkSchema.safeParse({ type: 'jsonl' }).success, false);
    assert.equal(telemetrySinkSchema.safeParse({ type: 'log', extra: 1 }).success, false);
  });

  it('builds the configured sinks', async () => {
    const registry = new Registry();
    const file = path.join(tmpDir(), 'runs.jsonl');
    const sink = createTelemetrySinks([{ type: 'log' }, { type: 'jsonl', path: file }, { type: 'prometheus' }], { log: silentLogger(), registry });
    assert.ok(sink instanceof FanoutTelemetrySink);
    sink.record(run());
    await sink.close?.();
    assert.equal((await readFile(file, 'utf8')).trimEnd().split('\n').length, 1);
    assert.match(await registry.metrics(), /^repr_run_total\{status="OK",exit="0"\} 1$/m);

    assert.ok(createTelemetrySinks([{ type: 'log' }], { log: silentLogger() }) instanceof LogTelemetrySink);
    // No sinks: records go nowhere, without error.
    assert.doesNotThrow(() => createTelemetrySinks([], { log: silentLogger() }).record(run()));
  });

  it('refuses a prometheus sink without a registry, and two of them', () => {
    const noRegistry = () => createTelemetrySinks([{ type: 'prometheus' }], { log: silentLogger() });
    assert.throws(noRegistry, /needs a metrics registry/);
    assert.throws(noRegistry, (e: unknown) => codeOf(e) === Code.INVALID_ARGUMENT);
    assert.throws(
      () => createTelemetrySinks([{ type: 'prometheus' }, { type: 'prometheus' }], { log: silentLogger(), registry: new Registry() }),
      /at most one sink of type "prometheus"/,
    );
  });
});
