import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import {
  Client,
  credentials,
  type Interceptor,
  Metadata,
  type sendUnaryData,
  Server,
  ServerCredentials,
  type ServerDuplexStream,
  type ServerReadableStream,
  type ServerUnaryCall,
  type ServerWritableStream,
  type ServiceDefinition,
  type ServiceError,
} from '@grpc/grpc-js';
import { Code, codeOf } from '../../../src/common/errors.js';
import {
  authInterceptor,
  authSchema,
  bearerInterceptor,
  createAuthenticator,
  NoAuthenticator,
  PRINCIPAL_METADATA_KEY,
  principalOf,
  TokenAuthenticator,
} from '../../../src/grpc/auth.js';
import { tmpDir } from '../../../support/tmp.js';

const ALICE = 'alice-0123456789abcdef';
const BOB = 'bob-fedcba9876543210';

// A hand-made service with one method of each kind; messages are raw bytes.
const bytes = {
  requestSerialize: (b: Buffer) => b,
  requestDeserialize: (b: Buffer) => b,
  responseSerialize: (b: Buffer) => b,
  responseDeserialize: (b: Buffer) => b,
};
const definition: ServiceDefinition = {
  Echo: { path: '/test.Auth/Echo', requestStream: false, responseStream: false, ...bytes },
  Ping: { path: '/test.Auth/Ping', requestStream: false, responseStream: false, ...bytes },
  Collect: { path: '/test.Auth/Collect', requestStream: true, responseStream: false, ...bytes },
  Watch: { path: '/test.Auth/Watch', requestStream: false, responseStream: true, ...bytes },
  Chat: { path: '/test.Auth/Chat', requestStream: true, responseStream: true, ...bytes },
};

/** What a handler saw, so the test can tell whether it ran at all. */
const ran: string[] = [];
const seen = (md: Metadata) => Buffer.from(JSON.stringify({ principal: principalOf(md) ?? null, authorization: md.get('authorization').length }));

const handlers = {
  Echo(call: ServerUnaryCall<Buffer, Buffer>, cb: sendUnaryData<Buffer>) {
    ran.push('Echo');
    cb(null, seen(call.metadata));
  },
  Ping(call: ServerUnaryCall<Buffer, Buffer>, cb: sendUnaryData<Buffer>) {
    ran.push('Ping');
    cb(null, seen(call.metadata));
  },
  Collect(call: ServerReadableStream<Buffer, Buffer>, cb: sendUnaryData<Buffer>) {
    ran.push('Collect');
    let n = 0;
    call.on('data', () => n++);
    call.on('end', () => cb(null, Buffer.from(String(n))));
  },
  Watch(call: ServerWritableStream<Buffer, Buffer>) {
    ran.push('Watch');
    call.write(Buffer.from('one'));
    call.end();
  },
  Chat(call: ServerDuplexStream<Buffer, Buffer>) {
    ran.push('Chat');
    call.on('data', (b: Buffer) => call.write(b));
    call.on('end', () => call.end());
  },
};

describe('authInterceptor on a real grpc-js server', () => {
  let server: Server;
  let address: string;
  const clients: Client[] = [];

  before(async () => {
    const auth = new TokenAuthenticator([
      { name: 'alice', token: ALICE },
      { name: 'bob', token: BOB },
    ]);
    server = new Server({ interceptors: [authInterceptor(auth, { exempt: ['/test.Auth/Ping'] })] });
    server.addService(definition, handlers);
    const port = await new Promise<number>((resolve, reject) =>
      server.bindAsync('127.0.0.1:0', ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))),
    );
    address = `127.0.0.1:${port}`;
  });
  after(() => {
    for (const c of clients) c.close();
    server.forceShutdown();
  });

  const client = (...interceptors: Interceptor[]): Client => {
    const c = new Client(address, credentials.createInsecure(), { interceptors });
    clients.push(c);
    return c;
  };
  const deadline = () => ({ deadline: Date.now() + 5000 });

  const unary = (c: Client, method: string, md = new Metadata()) =>
    new Promise<Buffer>((resolve, reject) =>
      c.makeUnaryRequest(
        `/test.Auth/${method}`,
        (b: Buffer) => b,
        (b: Buffer) => b,
        Buffer.from('hi'),
        md,
        deadline(),
        (err, res) => (err ? reject(err) : resolve(res!)),
      ),
    );
  const collect = (c: Client, n: number) =>
    new Promise<Buffer>((resolve, reject) => {
      const call = c.makeClientStreamRequest(
        '/test.Auth/Collect',
        (b: Buffer) => b,
        (b: Buffer) => b,
        new Metadata(),
        deadline(),
        (err, res) => (err ? reject(err) : resolve(res!)),
      );
      call.on('error', () => {}); // The status arrives through the callback.
      for (let i = 0; i < n; i++) call.write(Buffer.from([i]));
      call.end();
    });
  const chat = (c: Client, msgs: string[]) =>
    new Promise<string[]>((resolve, reject) => {
      const call = c.makeBidiStreamRequest(
        '/test.Auth/Chat',
        (b: Buffer) => b,
        (b: Buffer) => b,
        new Metadata(),
        deadline(),
      );
      const got: string[] = [];
      call.on('data', (b: Buffer) => got.push(b.toString()));
      call.on('error', reject);
      call.on('end', () => resolve(got));
      for (const m of msgs) call.write(Buffer.from(m));
      call.end();
    });
  const watch = (c: Client) =>
    new Promise<string[]>((resolve, reject) => {
      const call = c.makeServerStreamRequest(
        '/test.Auth/Watch',
        (b: Buffer) => b,
        (b: Buffer) => b,
        Buffer.from('go'),
        new Metadata(),
        deadline(),
      );
      const got: string[] = [];
      call.on('data', (b: Buffer) => got.push(b.toString()));
      call.on('error', reject);
      call.on('end', () => resolve(got));
    });

  const refused = (code: Code, message: RegExp) => (e: unknown) => {
    assert.equal(codeOf(e), code, (e as Error).message);
    assert.match((e as ServiceError).details, message);
    return true;
  };

  it('refuses a call without credentials with UNAUTHENTICATED, before the handler runs', async () => {
    ran.length = 0;
    await assert.rejects(unary(client(), 'Echo'), refused(Code.UNAUTHENTICATED, /no credentials.*Bearer/));
    assert.deepEqual(ran, []);
  });

  it('refuses a wrong token with PERMISSION_DENIED, without echoing it', async () => {
    ran.length = 0;
    await assert.rejects(unary(client(bearerInterceptor('not-a-valid-token-at-all')), 'Echo'), (e: unknown) => {
      refused(Code.PERMISSION_DENIED, /^invalid token$/)(e);
      assert.doesNotMatch((e as ServiceError).details, /not-a-valid/);
      return true;
    });
    assert.deepEqual(ran, []);
  });

  it('refuses a header that is not a bearer token with UNAUTHENTICATED', async () => {
    ran.length = 0;
    const md = new Metadata();
    md.set('authorization', `Basic ${ALICE}`);
    await assert.rejects(unary(client(), 'Echo', md), refused(Code.UNAUTHENTICATED, /Bearer/));
    assert.deepEqual(ran, []);
  });

  it('lets a right token through and tells the handler who called, but not the token', async () => {
    ran.length = 0;
    const res = JSON.parse((await unary(client(bearerInterceptor(ALICE)), 'Echo')).toString()) as { principal: string; authorization: number };
    assert.deepEqual(res, { principal: 'alice', authorization: 0 });
    const bob = JSON.parse((await unary(client(bearerInterceptor(BOB)), 'Echo')).toString()) as { principal: string };
    assert.equal(bob.principal, 'bob');
    assert.deepEqual(ran, ['Echo', 'Echo']);
  });

  it('does not let a client name itself through the principal header', async () => {
    const md = new Metadata();
    md.set(PRINCIPAL_METADATA_KEY, 'root');
    const res = JSON.parse((await unary(client(bearerInterceptor(BOB)), 'Echo', md)).toString()) as { principal: string };
    assert.equal(res.principal, 'bob');
    // On an exempt method too.
    const ping = JSON.parse((await unary(client(), 'Ping', md)).toString()) as { principal: string | null };
    assert.equal(ping.principal, null);
  });

  it('lets exempt methods through without credentials', async () => {
    ran.length = 0;
    await unary(client(), 'Ping');
    assert.deepEqual(ran, ['Ping']);
  });

  it('refuses streaming calls of every kind, and serves them with a right token', async () => {
    ran.length = 0;
    await assert.rejects(collect(client(), 3), refused(Code.UNAUTHENTICATED, /no credentials/));
    await assert.rejects(collect(client(bearerInterceptor('x'.repeat(20))), 3), refused(Code.PERMISSION_DENIED, /invalid token/));
    await assert.rejects(chat(client(), ['a', 'b']), refused(Code.UNAUTHENTICATED, /no credentials/));
    await assert.rejects(chat(client(bearerInterceptor('y'.repeat(20))), ['a']), refused(Code.PERMISSION_DENIED, /invalid token/));
    await assert.rejects(watch(client()), refused(Code.UNAUTHENTICATED, /no credentials/));
    assert.deepEqual(ran, []);

    const ok = client(bearerInterceptor(ALICE));
    assert.equal((await collect(ok, 3)).toString(), '3');
    assert.deepEqual(await chat(ok, ['a', 'b']), ['a', 'b']);
    assert.deepEqual(await watch(ok), ['one']);
    assert.deepEqual(ran, ['Collect', 'Chat', 'Watch']);
  });
});

describe('authenticators and their config', () => {
  const withAuth = (value: string) => {
    const md = new Metadata();
    md.set('authorization', value);
    return md;
  };

  it('NoAuthenticator lets everyone in as anonymous', () => {
    assert.deepEqual(new NoAuthenticator().authenticate(new Metadata()), { name: 'anonymous' });
  });

  it('TokenAuthenticator accepts the scheme in any case and refuses several headers', () => {
    const a = new TokenAuthenticator([{ name: 'alice', token: ALICE }]);
    assert.deepEqual(a.authenticate(withAuth(`bearer ${ALICE}`)), { name: 'alice' });
    const two = withAuth(`Bearer ${ALICE}`);
    two.add('authorization', `Bearer ${BOB}`);
    assert.throws(
      () => a.authenticate(two),
      (e: unknown) => codeOf(e) === Code.UNAUTHENTICATED,
    );
    assert.throws(
      () => a.authenticate(withAuth('Bearer ')),
      (e: unknown) => codeOf(e) === Code.UNAUTHENTICATED,
    );
    // A prefix of a real token is just a wrong token.
    assert.throws(
      () => a.authenticate(withAuth(`Bearer ${ALICE.slice(0, 10)}`)),
      (e: unknown) => codeOf(e) === Code.PERMISSION_DENIED,
    );
  });

  it('refuses weak or ambiguous token lists', () => {
    assert.throws(() => new TokenAuthenticator([]), /at least one token/);
    assert.throws(() => new TokenAuthenticator([{ name: 'a', token: 'short' }]), /shorter than 16/);
    assert.throws(
      () =>
        new TokenAuthenticator([
          { name: 'a', token: ALICE },
          { name: 'b', token: ALICE },
        ]),
      /also given to another name/,
    );
  });

  it('reads a tokens file of name:token lines', async () => {
    const file = path.join(tmpDir(), 'tokens');
    await writeFile(file, `# people\nalice:${ALICE}\n\n  ci : ci:with:colons:0123456789  \n`);
    const a = createAuthenticator(authSchema.parse({ type: 'token', tokensFile: file }));
    assert.deepEqual(a.authenticate(withAuth(`Bearer ${ALICE}`)), { name: 'alice' });
    assert.deepEqual(a.authenticate(withAuth('Bearer ci:with:colons:0123456789')), { name: 'ci' });

    await writeFile(file, 'no-colon-here\n');
    assert.throws(() => TokenAuthenticator.fromFile(file), /tokens:1: expected name:token/);
    assert.throws(() => TokenAuthenticator.fromFile(path.join(tmpDir(), 'missing')), /cannot read tokens file/);
  });

  it('validates the auth config and builds from it', () => {
    assert.ok(createAuthenticator(authSchema.parse({ type: 'none' })) instanceof NoAuthenticator);
    const t = createAuthenticator(authSchema.parse({ type: 'token', tokens: [{ name: 'bob', token: BOB }] }));
    assert.deepEqual(t.authenticate(withAuth(`Bearer ${BOB}`)), { name: 'bob' });

    const noTokens = authSchema.safeParse({ type: 'token' });
    assert.equal(noTokens.success, false);
    assert.match(noTokens.error!.issues[0]!.message, /"tokens" or "tokensFile"/);
    assert.equal(authSchema.safeParse({ type: 'token', tokens: [{ name: 'x', token: 'short' }] }).success, false);
    assert.equal(authSchema.safeParse({ type: 'mtls' }).success, false);
    assert.equal(authSchema.safeParse({ type: 'none', tokens: [] }).success, false);
  });
});
