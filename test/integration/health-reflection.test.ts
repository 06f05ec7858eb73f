import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import {
  type Client,
  type ClientReadableStream,
  credentials,
  loadPackageDefinition,
  makeGenericClientConstructor,
  Metadata,
  type ServiceError,
} from '@grpc/grpc-js';
import { loadSync } from '@grpc/proto-loader';
import { computeDigest, SHA256 } from '../../src/common/digest.js';
import { encodeWriteRequest } from '../../src/reapi/bytestream-codec.js';
import { ReapiClient } from '../../src/reapi/reapi-client.js';
import { HealthService } from '../../src/services/health-service.js';
import { metricValue, scrapeMetrics } from '../../support/metrics.js';
import { startServerProcess, type ServerProcess } from '../../support/servers.js';
import { tmpDir } from '../../support/tmp.js';

type Unary = (req: unknown, md: Metadata, cb: (e: ServiceError | null, r?: { status: string }) => void) => void;
type HealthClient = Client & { Check: Unary; Watch: (req: unknown) => ClientReadableStream<{ status: string }> };
type ReflectionCall = { write(m: unknown): void; end(): void; on(ev: string, fn: (x: never) => void): void };
type ReflectionClient = Client & { ServerReflectionInfo: (md: Metadata) => ReflectionCall };

const Health = makeGenericClientConstructor(HealthService.definition, 'Health');
// The reflection protocol as a client speaks it, from the .proto the reflection package ships.
const reflectionProto = path.join(
  path.dirname(createRequire(import.meta.url).resolve('@grpc/reflection')),
  '..',
  'proto',
  'grpc',
  'reflection',
  'v1',
  'reflection.proto',
);
const reflectionPkg = loadPackageDefinition(loadSync(reflectionProto, { keepCase: true })) as unknown as {
  grpc: { reflection: { v1: { ServerReflection: new (target: string, creds: ReturnType<typeof credentials.createInsecure>) => ReflectionClient } } };
};

const withToken = (token?: string) => {
  const md = new Metadata();
  if (token) md.set('authorization', `Bearer ${token}`);
  return md;
};

function check(client: HealthClient, service: string, token?: string): Promise<string> {
  return new Promise((resolve, reject) => client.Check({ service }, withToken(token), (e, r) => (e ? reject(e) : resolve(r!.status))));
}

/** One reflection request; resolves with the server's one response. */
function reflect(client: ReflectionClient, request: Record<string, unknown>, token?: string): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    const call = client.ServerReflectionInfo(withToken(token));
    call.on('data', (res: Record<string, unknown>) => {
      resolve(res);
      call.end();
    });
    call.on('error', reject);
    call.write(request);
  });
}

async function listServices(client: ReflectionClient, token?: string): Promise<string[]> {
  const res = await reflect(client, { list_services: '' }, token);
  return (res.list_services_response as { service: { name: string }[] }).service.map((s) => s.name).sort();
}

/** Resolves once the server says SERVING: it starts NOT_SERVING until its stores are indexed. */
function untilServing(client: HealthClient): Promise<void> {
  return new Promise((resolve, reject) => {
    const watch = client.Watch({ service: '' });
    watch.on('data', (m: { status: string }) => {
      if (m.status !== 'SERVING') return;
      watch.cancel();
      resolve();
    });
    watch.on('error', (e: ServiceError) => (e.code === 1 ? undefined : reject(e)));
  });
}

const code = (c: number) => (e: unknown) => (e as ServiceError).code === c;

function clientsFor(server: ServerProcess): { health: HealthClient; reflection: ReflectionClient; close(): void } {
  const health = new Health(server.address, credentials.createInsecure()) as unknown as HealthClient;
  const reflection = new reflectionPkg.grpc.reflection.v1.ServerReflection(server.address, credentials.createInsecure());
  return { health, reflection, close: () => (health.close(), reflection.close()) };
}

const REAPI = 'build.bazel.remote.execution.v2';

describe('gRPC health and reflection on a server with remote execution', () => {
  let server: ServerProcess;
  let c: ReturnType<typeof clientsFor>;

  before(async () => {
    server = await startServerProcess(['--data-dir', tmpDir('repr-health-'), '--metrics-listen', '127.0.0.1:0']);
    c = clientsFor(server);
    await untilServing(c.health);
  });
  after(async () => {
    c?.close();
    await server?.stop();
  });

  it('answers SERVING for the server as a whole and for each service it serves, NOT_FOUND for others', async () => {
    assert.equal(await check(c.health, ''), 'SERVING');
    assert.equal(await check(c.health, `${REAPI}.Execution`), 'SERVING');
    assert.equal(await check(c.health, `${REAPI}.ActionCache`), 'SERVING');
    await assert.rejects(check(c.health, 'no.such.Service'), code(5));
  });

  it('reflection lists the services served and hands out their file descriptors', async () => {
    const names = await listServices(c.reflection);
    for (const s of [
      `${REAPI}.ActionCache`,
      `${REAPI}.Capabilities`,
      `${REAPI}.ContentAddressableStorage`,
      `${REAPI}.Execution`,
      'google.bytestream.ByteStream',
    ])
      assert.ok(names.includes(s), `${s} in ${names.join(', ')}`);
    assert.ok(names.includes('google.longrunning.Operations'));
    assert.ok(names.includes('grpc.health.v1.Health'));
    const res = await reflect(c.reflection, { file_containing_symbol: `${REAPI}.Execution` });
    const files = (res.file_descriptor_response as { file_descriptor_proto: Buffer[] }).file_descriptor_proto;
    assert.ok(
      files.some((f) => f.includes('build/bazel/remote/execution/v2/remote_execution.proto')),
      'the descriptor of the file that defines Execution',
    );
  });

  it('counts calls by method and status code in /metrics', async () => {
    await check(c.health, '');
    await assert.rejects(check(c.health, 'no.such.Service'));
    const text = await scrapeMetrics(server);
    const count = (method: string, status: string) => metricValue(text, `repr_grpc_server_handling_seconds_count{method="${method}",code="${status}"}`);
    assert.ok(count('/grpc.health.v1.Health/Check', 'OK') >= 1);
    assert.ok(count('/grpc.health.v1.Health/Check', 'NOT_FOUND') >= 1);
    assert.ok(count('/grpc.reflection.v1.ServerReflection/ServerReflectionInfo', 'OK') >= 1);
    assert.match(text, /^repr_grpc_server_handling_seconds_bucket\{le="0\.001",method="\/grpc\.health\.v1\.Health\/Check",code="OK"\} \d+$/m);
  });
});

describe('gRPC health while a server stops', () => {
  it('a Watch hears NOT_SERVING as soon as stop begins, while a call still holds the grace period', async () => {
    const server = await startServerProcess(['--data-dir', tmpDir('repr-health-stop-')]);
    const c = clientsFor(server);
    const cas = new ReapiClient({ target: server.address });
    try {
      const heard: string[] = [];
      const watch = c.health.Watch({ service: '' });
      const ended = new Promise<void>((resolve, reject) => {
        watch.on('data', (m: { status: string }) => heard.push(m.status));
        watch.on('end', resolve);
        watch.on('error', reject);
      });
      // NOT_SERVING first while the stores index (an empty data directory: moments), then SERVING.
      while (heard.at(-1) !== 'SERVING') await new Promise((r) => setTimeout(r, 10));
      assert.ok(
        heard.every((h, i) => h === (i === heard.length - 1 ? 'SERVING' : 'NOT_SERVING')),
        heard.join(),
      );
      heard.length = 0;

      // An upload left half done: the server waits for it through its grace period.
      const blob = Buffer.alloc(64 * 1024, 7);
      const d = computeDigest(SHA256, blob);
      const upload = cas.openEncodedWrite();
      const refused = upload.response.catch((e: unknown) => e);
      upload.stream.write(encodeWriteRequest({ resourceName: `uploads/u1/blobs/${d.hash}/${d.sizeBytes}`, data: blob.subarray(0, 1024) }));
      await new Promise((r) => setTimeout(r, 200));

      const exited = server.stop('SIGTERM');
      await ended;
      assert.deepEqual(heard, ['NOT_SERVING'], 'NOT_SERVING, then the stream ends so it does not hold the shutdown');
      assert.equal(server.child.exitCode, null, 'still draining: the upload holds it');
      upload.stream.cancel();
      await refused;
      assert.equal(await exited, 0);
    } finally {
      cas.close();
      c.close();
      await server.stop();
    }
  });
});

describe('gRPC health and reflection on a cache-only server with tokens', () => {
  const TOKEN = 'health-test-token-0123456789abcdef';
  let server: ServerProcess;
  let c: ReturnType<typeof clientsFor>;

  before(async () => {
    const dir = tmpDir('repr-health-auth-');
    const tokens = path.join(dir, 'tokens');
    writeFileSync(tokens, `reader:${TOKEN} reader\n`);
    server = await startServerProcess(['--data-dir', path.join(dir, 'data'), '--cache-only', '--auth-tokens-file', tokens, '--metrics-listen', '127.0.0.1:0']);
    c = clientsFor(server);
    await untilServing(c.health);
  });
  after(async () => {
    c?.close();
    await server?.stop();
  });

  it('answers health checks without credentials, and refuses everything else without them', async () => {
    assert.equal(await check(c.health, ''), 'SERVING');
    assert.equal(await check(c.health, `${REAPI}.ActionCache`), 'SERVING');
    assert.equal(await check(c.health, '', 'a-token-nobody-issued-0123456789'), 'SERVING', 'credentials are not looked at');
    const cas = new ReapiClient({ target: server.address });
    try {
      await assert.rejects(cas.getCapabilities(), code(16));
    } finally {
      cas.close();
    }
    await assert.rejects(listServices(c.reflection), code(16));
    const text = await scrapeMetrics(server);
    assert.ok(
      metricValue(text, `repr_grpc_server_handling_seconds_count{method="/${REAPI}.Capabilities/GetCapabilities",code="UNAUTHENTICATED"}`) >= 1,
      'refused calls are counted too',
    );
  });

  it('reflection, for an authenticated caller, lists no Execution on a cache-only server', async () => {
    const names = await listServices(c.reflection, TOKEN);
    assert.ok(names.includes(`${REAPI}.ActionCache`), names.join(', '));
    assert.ok(names.includes('grpc.health.v1.Health'));
    assert.ok(!names.includes(`${REAPI}.Execution`), names.join(', '));
    assert.ok(!names.includes('google.longrunning.Operations'), names.join(', '));
    await assert.rejects(check(c.health, `${REAPI}.Execution`), code(5));
  });
});
