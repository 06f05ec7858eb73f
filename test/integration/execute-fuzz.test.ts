import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { credentials, makeGenericClientConstructor, type ServiceError } from '@grpc/grpc-js';
import { toWire } from '../../src/common/digest.js';
import { seededRandom } from '../../src/common/seeded-random.js';
import { Code } from '../../src/common/errors.js';
import { ReapiClient } from '../../src/reapi/reapi-client.js';
import { Action, ExecuteRequest } from '../../src/proto/build/bazel/remote/execution/v2/remote_execution.js';
import type { ReprServer } from '../../src/server/server.js';
import { startInProcess } from '../../support/servers.js';
import { tmpDir } from '../../support/tmp.js';
import { putBlob, uploadRawAction } from '../../support/actions.js';

function mutate(bytes: Buffer, rnd: () => number): Buffer {
  const b = Buffer.from(bytes);
  const kind = Math.floor(rnd() * 4);
  if (kind === 0) for (let i = 0; i < 1 + rnd() * 4; i++) b[Math.floor(rnd() * b.length)] = Math.floor(rnd() * 256);
  if (kind === 1) return b.subarray(0, Math.floor(rnd() * b.length));
  if (kind === 2) return Buffer.concat([b, Buffer.from(Array.from({ length: 1 + Math.floor(rnd() * 12) }, () => Math.floor(rnd() * 256)))]);
  if (kind === 3) return Buffer.from(Array.from({ length: Math.floor(rnd() * 64) }, () => Math.floor(rnd() * 256)));
  return b;
}

// Raw bytes in, raw bytes out: the request need not be a valid ExecuteRequest.
const RawExecution = makeGenericClientConstructor(
  {
    execute: {
      path: '/build.bazel.remote.execution.v2.Execution/Execute',
      requestStream: false,
      responseStream: true,
      requestSerialize: (b: Buffer) => b,
      requestDeserialize: (b: Buffer) => b,
      responseSerialize: (b: Buffer) => b,
      responseDeserialize: (b: Buffer) => b,
    },
  },
  'Execution',
);

describe('fuzzed Execute requests get a client-error status, never INTERNAL', () => {
  let server: ReprServer;
  let client: ReapiClient;
  let raw: InstanceType<typeof RawExecution>;

  before(async () => {
    server = await startInProcess({ dataDir: tmpDir(), execution: { executors: 2 } });
    client = new ReapiClient({ target: server.address });
    raw = new RawExecution(server.address, credentials.createInsecure());
  });
  after(async () => {
    raw.close();
    client.close();
    await server.stop();
  });

  const call = (req: Buffer): Promise<number> =>
    new Promise((resolve) => {
      const s = (raw as unknown as { execute(r: Buffer, o: object): NodeJS.ReadableStream }).execute(req, { deadline: Date.now() + 20_000 });
      s.on('data', () => {});
      s.on('error', (e: ServiceError) => resolve(e.code));
      s.on('end', () => resolve(Code.OK));
    });

  it('mutated ExecuteRequest bytes', async () => {
    const action = await uploadRawAction(client, { root: { f: 'x' }, command: { arguments: ['/bin/true'] } });
    const valid = Buffer.from(ExecuteRequest.encode(ExecuteRequest.fromPartial({ actionDigest: toWire(action), skipCacheLookup: true })).finish());
    assert.equal(await call(valid), Code.OK, 'the unmutated request runs');
    const rnd = seededRandom(11);
    const seen = new Map<number, number>();
    for (let i = 0; i < 200; i++) {
      const req = mutate(valid, rnd);
      const code = await call(req);
      seen.set(code, (seen.get(code) ?? 0) + 1);
      assert.ok(code !== Code.INTERNAL && code !== Code.UNKNOWN, `case ${i} (${req.toString('hex')}) answered ${Code[code]}`);
    }
    assert.ok((seen.get(Code.INVALID_ARGUMENT) ?? 0) > 0, `some were refused as invalid: ${JSON.stringify([...seen])}`);
  });

  it('a valid request naming mutated Action blobs', async () => {
    const base = await uploadRawAction(client, { root: { f: 'x' }, command: { arguments: ['/bin/true'] } });
    const actionBytes = await client.read(base);
    assert.ok(Action.decode(actionBytes));
    const rnd = seededRandom(7);
    for (let i = 0; i < 100; i++) {
      const d = await putBlob(client, mutate(actionBytes, rnd));
      const req = Buffer.from(ExecuteRequest.encode(ExecuteRequest.fromPartial({ actionDigest: toWire(d), skipCacheLookup: true })).finish());
      const code = await call(req);
      assert.ok(code !== Code.INTERNAL && code !== Code.UNKNOWN, `case ${i} answered ${Code[code]}`);
    }
  });
});
