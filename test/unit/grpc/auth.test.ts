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
import { silentLogger } from '../../../src/common/logger.js';
import { accessInterceptor, callerOf, type MethodRule } from '../../../src/grpc/access-interceptor.js';
import { AccessPolicy, globMatcher } from '../../../src/grpc/access-policy.js';
import { type Authenticator, bearerInterceptor, CredentialChain, PRINCIPAL_METADATA_KEY, parseTokens, TokenAuthenticator } from '../../../src/grpc/auth.js';
import { authSchema, createAccess } from '../../../src/grpc/auth-config.js';
import { captureLogger } from '../../../support/log-capture.js';
import { tmpDir } from '../../../support/tmp.js';

const ALICE = 'alice-0123456789abcdef';
const BOB = 'bob-fedcba9876543210';
const CAROL = 'carol-0123456789abcdef';
const DAVE = 'dave-0123456789abcdef0';

// A hand-made service with one method of each kind; messages are raw bytes,
// and a message "inst:NAME" names instance NAME.
const bytes = {
  requestSerialize: (b: Buffer) => b,
  requestDeserialize: (b: Buffer) => b,
  responseSerialize: (b: Buffer) => b,
  responseDeserialize: (b: Buffer) => b,
};
const definition: ServiceDefinition = {
  Echo: { path: '/test.Auth/Echo', requestStream: false, responseStream: false, ...bytes },
  Open: { path: '/test.Auth/Open', requestStream: false, responseStream: false, ...bytes },
  Hidden: { path: '/test.Auth/Hidden', requestStream: false, responseStream: false, ...bytes },
  Collect: { path: '/test.Auth/Collect', requestStream: true, responseStream: false, ...bytes },
  Watch: { path: '/test.Auth/Watch', requestStream: false, responseStream: true, ...bytes },
  Chat: { path: '/test.Auth/Chat', requestStream: true, responseStream: true, ...bytes },
  Status: { path: '/test.Auth/Status', requestStream: false, responseStream: false, ...bytes },
};
const instance = (m: unknown) => {
  const s = Buffer.isBuffer(m) ? m.toString() : '';
  return s.startsWith('inst:') ? s.slice(5) : undefined;
};
const methods = new Map<string, MethodRule>([
  ['/test.Auth/Echo', { anyOf: ['cas-read'], instance }],
  ['/test.Auth/Open', { anyOf: 'authenticated' }],
  ['/test.Auth/Collect', { anyOf: ['cas-write'], instance }],
  ['/test.Auth/Watch', { anyOf: ['cas-read'], instance }],
  ['/test.Auth/Chat', { anyOf: ['run'], instance }],
  ['/test.Auth/Status', { anyOf: ['admin'], everyInstance: true }],
]);

/** What a handler saw, so the test can tell whether it ran at all and with what. */
const ran: string[] = [];
const seen = (md: Metadata, extra: Record<string, unknown> = {}) => {
  const c = callerOf(md);
  return Buffer.from(
    JSON.stringify({
      principal: md.get(PRINCIPAL_METADATA_KEY)[0] ?? null,
      via: c?.principal.via ?? null,
      authorization: md.get('authorization').length,
      ...extra,
    }),
  );
};

const handlers = {
  Echo(call: ServerUnaryCall<Buffer, Buffer>, cb: sendUnaryData<Buffer>) {
    ran.push('Echo');
    cb(null, seen(call.metadata, { request: call.request.toString() }));
  },
  Open(call: ServerUnaryCall<Buffer, Buffer>, cb: sendUnaryData<Buffer>) {
    ran.push('Open');
    cb(null, seen(call.metadata));
  },
  Hidden(call: ServerUnaryCall<Buffer, Buffer>, cb: sendUnaryData<Buffer>) {
    ran.push('Hidden');
    cb(null, seen(call.metadata));
  },
  Status(call: ServerUnaryCall<Buffer, Buffer>, cb: sendUnaryData<Buffer>) {
    ran.push('Status');
    cb(null, seen(call.metadata));
  },
  Collect(call: ServerReadableStream<Buffer, Buffer>, cb: sendUnaryData<Buffer>) {
    ran.push('Collect');
    const got: string[] = [];
    call.on('data', (b: Buffer) => got.push(b.toString()));
    call.on('end', () => cb(null, Buffer.from(got.join(','))));
  },
  Watch(call: ServerWritableStream<Buffer, Buffer>) {
    ran.push('Watch');
    call.write(Buffer.from(`one:${call.request.toString()}`));
    call.end();
  },
  Chat(call: ServerDuplexStream<Buffer, Buffer>) {
    ran.push('Chat');
    call.on('data', (b: Buffer) => call.write(b));
    call.on('end', () => call.end());
  },
};

const policy = new AccessPolicy({
  principals: [
    { name: 'car*', roles: ['developer'], instances: ['a', 'team/*'] },
    { name: 'bob', permissions: ['admin'], instances: ['ops'] },
  ],
});
const chain = new CredentialChain({
  tokens: new TokenAuthenticator([
    { name: 'alice', token: ALICE, roles: ['reader'] },
    { name: 'bob', token: BOB, roles: ['developer'] },
    { name: 'carol', token: CAROL },
    { name: 'dave', token: DAVE },
  ]),
});

async function serve(authenticator: Authenticator, log = silentLogger()): Promise<{ server: Server; address: string }> {
  const server = new Server({ interceptors: [accessInterceptor({ authenticator, policy, methods, log })] });
  server.addService(definition, handlers);
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync('127.0.0.1:0', ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))),
  );
  return { server, address: `127.0.0.1:${port}` };
}

const deadline = () => ({ deadline: Date.now() + 20_000 });
const unary = (c: Client, method: string, body = 'hi', md = new Metadata()) =>
  new Promise<Record<string, unknown>>((resolve, reject) =>
    c.makeUnaryRequest(
      `/test.Auth/${method}`,
      (b: Buffer) => b,
      (b: Buffer) => b,
      Buffer.from(body),
      md,
      deadline(),
      (err, res) => (err ? reject(err) : resolve(JSON.parse(res!.toString()) as Record<string, unknown>)),
    ),
  );
const collect = (c: Client, msgs: string[]) =>
  new Promise<string>((resolve, reject) => {
    const call = c.makeClientStreamRequest(
      '/test.Auth/Collect',
      (b: Buffer) => b,
      (b: Buffer) => b,
      new Metadata(),
      deadline(),
      (err, res) => (err ? reject(err) : resolve(res!.toString())),
    );
    call.on('error', () => {}); // The status arrives through the callback.
    // Written at once, before any answer: the interceptor must hold them, not lose them.
    for (const m of msgs) call.write(Buffer.from(m));
    call.end();
  });
/** Every message a response stream brings, or its error. */
const responses = (call: NodeJS.EventEmitter) =>
  new Promise<string[]>((resolve, reject) => {
    const got: string[] = [];
    call.on('data', (b: Buffer) => got.push(b.toString()));
    call.on('error', reject);
    call.on('end', () => resolve(got));
  });
const chat = (c: Client, msgs: string[]) => {
  const call = c.makeBidiStreamRequest(
    '/test.Auth/Chat',
    (b: Buffer) => b,
    (b: Buffer) => b,
    new Metadata(),
    deadline(),
  );
  const got = responses(call);
  for (const m of msgs) call.write(Buffer.from(m));
  call.end();
  return got;
};
const watch = (c: Client, body = 'go') =>
  responses(
    c.makeServerStreamRequest(
      '/test.Auth/Watch',
      (b: Buffer) => b,
      (b: Buffer) => b,
      Buffer.from(body),
      new Metadata(),
      deadline(),
    ),
  );

const refused = (code: Code, message: RegExp) => (e: unknown) => {
  assert.equal(codeOf(e), code, (e as Error).message);
  assert.match((e as ServiceError).details, message);
  return true;
};

describe('accessInterceptor on a real grpc-js server', () => {
  let server: Server;
  let address: string;
  const capture = captureLogger('warn');
  const clients: Client[] = [];

  before(async () => {
    ({ server, address } = await serve(chain, capture.log));
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

  it('refuses a call without credentials with UNAUTHENTICATED, before the handler runs', async () => {
    ran.length = 0;
    await assert.rejects(unary(client(), 'Echo'), refused(Code.UNAUTHENTICATED, /no credentials.*Bearer/));
    assert.deepEqual(ran, []);
  });

  it('refuses an unknown token with UNAUTHENTICATED, without echoing it', async () => {
    ran.length = 0;
    await assert.rejects(unary(client(bearerInterceptor('not-a-valid-token-at-all')), 'Echo'), (e: unknown) => {
      refused(Code.UNAUTHENTICATED, /^invalid token: unknown token$/)(e);
      assert.doesNotMatch((e as ServiceError).details, /not-a-valid/);
      return true;
    });
    assert.deepEqual(ran, []);
  });

  it('refuses a header that is not a bearer token with UNAUTHENTICATED', async () => {
    ran.length = 0;
    const md = new Metadata();
    md.set('authorization', `Basic ${ALICE}`);
    await assert.rejects(unary(client(), 'Echo', 'hi', md), refused(Code.UNAUTHENTICATED, /Bearer/));
    assert.deepEqual(ran, []);
  });

  it('lets a right token through and tells the handler who called, but not the token', async () => {
    ran.length = 0;
    const res = await unary(client(bearerInterceptor(ALICE)), 'Echo');
    assert.deepEqual(res, { principal: 'alice', via: 'token', authorization: 0, request: 'hi' });
    assert.equal((await unary(client(bearerInterceptor(BOB)), 'Echo')).principal, 'bob');
    assert.deepEqual(ran, ['Echo', 'Echo']);
  });

  it('does not let a client name itself through the principal header', async () => {
    const md = new Metadata();
    md.set(PRINCIPAL_METADATA_KEY, 'root');
    assert.equal((await unary(client(bearerInterceptor(BOB)), 'Echo', 'hi', md)).principal, 'bob');
  });

  it('refuses a principal without the permission, naming it, the principal and the method', async () => {
    ran.length = 0;
    // alice is a reader: no run, no cas-write, no admin.
    await assert.rejects(
      chat(client(bearerInterceptor(ALICE)), ['a']),
      refused(Code.PERMISSION_DENIED, /^principal "alice" lacks run \(Chat, on any instance\)$/),
    );
    await assert.rejects(collect(client(bearerInterceptor(ALICE)), ['x']), refused(Code.PERMISSION_DENIED, /lacks cas-write \(Collect/));
    // dave's token carries no roles and no grant matches him: nothing at all.
    await assert.rejects(unary(client(bearerInterceptor(DAVE)), 'Echo'), refused(Code.PERMISSION_DENIED, /principal "dave" lacks cas-read/));
    // Methods open to any authenticated principal are still closed without credentials.
    assert.equal((await unary(client(bearerInterceptor(DAVE)), 'Open')).principal, 'dave');
    await assert.rejects(unary(client(), 'Open'), refused(Code.UNAUTHENTICATED, /no credentials/));
    assert.deepEqual(ran, ['Open']);
  });

  it('refuses a method that is not in the table, whoever calls', async () => {
    ran.length = 0;
    await assert.rejects(
      unary(client(bearerInterceptor(BOB)), 'Hidden'),
      refused(Code.PERMISSION_DENIED, /method \/test.Auth\/Hidden is not open to any permission/),
    );
    assert.deepEqual(ran, []);
  });

  it('checks an instance-scoped grant against the instance the first message names, before the handler sees it', async () => {
    ran.length = 0;
    const carol = client(bearerInterceptor(CAROL));
    assert.equal((await unary(carol, 'Echo', 'inst:a')).request, 'inst:a');
    assert.equal((await unary(carol, 'Echo', 'inst:team/x')).request, 'inst:team/x');
    await assert.rejects(unary(carol, 'Echo', 'inst:b'), refused(Code.PERMISSION_DENIED, /^principal "carol" lacks cas-read \(Echo, instance "b"\)$/));
    assert.deepEqual(await watch(carol, 'inst:a'), ['one:inst:a']);
    await assert.rejects(watch(carol, 'inst:b'), refused(Code.PERMISSION_DENIED, /instance "b"/));
    // Streams: the handler of a client stream starts with the call, so the
    // refused one must never have started.
    assert.equal(await collect(carol, ['inst:a', 'more', 'inst:a']), 'inst:a,more,inst:a');
    await assert.rejects(collect(carol, ['inst:b', 'more']), refused(Code.PERMISSION_DENIED, /lacks cas-write \(Collect, instance "b"\)/));
    assert.deepEqual(ran, ['Echo', 'Echo', 'Watch', 'Collect']);
    // A stream cannot switch to an instance mid-way.
    await assert.rejects(chat(carol, ['inst:a', 'inst:b']), refused(Code.PERMISSION_DENIED, /lacks run \(Chat, instance "b"\)/));
    // A stream that names no instance at all gets through empty; its handler judges it.
    assert.equal(await collect(carol, []), '');
    // A grant on every instance needs no look at the message.
    assert.equal((await unary(client(bearerInterceptor(BOB)), 'Echo', 'inst:b')).request, 'inst:b');
  });

  it('requires a permission on every instance where the method says so', async () => {
    // bob is admin only on "ops".
    await assert.rejects(unary(client(bearerInterceptor(BOB)), 'Status'), refused(Code.PERMISSION_DENIED, /lacks admin \(Status, on every instance\)/));
  });

  it('logs each denial once at warn, with the principal, method, instance and peer', async () => {
    const before = capture.records().length;
    await assert.rejects(unary(client(bearerInterceptor(CAROL)), 'Echo', 'inst:zz'));
    const recs = capture.records().slice(before);
    assert.equal(recs.length, 1, JSON.stringify(recs));
    const r = recs[0]!;
    assert.equal(r.level, 40);
    assert.equal(r.principal, 'carol');
    assert.equal(r.method, '/test.Auth/Echo');
    assert.equal(r.instance, 'zz');
    assert.match(String(r.peer), /127\.0\.0\.1/);
    assert.match(String(r.msg), /lacks cas-read/);
  });

  it('refuses streaming calls of every kind, and serves them with a right token', async () => {
    ran.length = 0;
    await assert.rejects(collect(client(), ['x']), refused(Code.UNAUTHENTICATED, /no credentials/));
    await assert.rejects(chat(client(bearerInterceptor('y'.repeat(20))), ['a']), refused(Code.UNAUTHENTICATED, /invalid token/));
    await assert.rejects(watch(client()), refused(Code.UNAUTHENTICATED, /no credentials/));
    assert.deepEqual(ran, []);
    const ok = client(bearerInterceptor(BOB));
    assert.equal(await collect(ok, ['1', '2', '3']), '1,2,3');
    assert.deepEqual(await chat(ok, ['a', 'b']), ['a', 'b']);
    assert.deepEqual(await watch(ok), ['one:go']);
    assert.deepEqual(ran, ['Collect', 'Chat', 'Watch']);
  });
});

describe('an authenticator that answers later', () => {
  let server: Server;
  let address: string;
  let c: Client;
  before(async () => {
    // Like a JWT whose key set is being fetched: the answer comes after the client has sent everything.
    const slow: Authenticator = {
      authenticate(call) {
        const p = chain.authenticate(call);
        return new Promise((resolve, reject) => setTimeout(() => Promise.resolve(p).then(resolve, reject), 200));
      },
    };
    ({ server, address } = await serve(slow));
    c = new Client(address, credentials.createInsecure(), { interceptors: [bearerInterceptor(CAROL)] });
  });
  after(() => {
    c.close();
    server.forceShutdown();
  });

  it('holds the messages sent at once until it has decided, and loses none', async () => {
    assert.equal((await unary(c, 'Echo', 'inst:a')).request, 'inst:a');
    assert.equal(await collect(c, ['inst:a', 'two', 'three', 'four']), 'inst:a,two,three,four');
    assert.deepEqual(await chat(c, ['inst:team/q', 'x', 'y']), ['inst:team/q', 'x', 'y']);
    await assert.rejects(collect(c, ['inst:b', 'two']), refused(Code.PERMISSION_DENIED, /instance "b"/));
  });
});

describe('credentials, roles and their config', () => {
  const withAuth = (value: string) => {
    const md = new Metadata();
    md.set('authorization', value);
    return { metadata: md };
  };

  it('accepts the bearer scheme in any case and refuses several headers', () => {
    const a = new CredentialChain({ tokens: new TokenAuthenticator([{ name: 'alice', token: ALICE }]) });
    assert.deepEqual(a.authenticate(withAuth(`bearer ${ALICE}`)), { name: 'alice', via: 'token', roles: [] });
    const two = withAuth(`Bearer ${ALICE}`);
    two.metadata.add('authorization', `Bearer ${BOB}`);
    assert.throws(
      () => a.authenticate(two),
      (e: unknown) => codeOf(e) === Code.UNAUTHENTICATED,
    );
    assert.throws(
      () => a.authenticate(withAuth('Bearer ')),
      (e: unknown) => codeOf(e) === Code.UNAUTHENTICATED,
    );
    // A prefix of a real token is just an unknown token.
    assert.throws(() => a.authenticate(withAuth(`Bearer ${ALICE.slice(0, 10)}`)), /invalid token: unknown token/);
  });

  it('ignores a bearer header on a server that takes no bearer tokens, serving the anonymous principal', () => {
    const open = createAccess(authSchema.parse({}));
    assert.deepEqual(open.authenticator.authenticate(withAuth(`Bearer ${ALICE}`)), { name: 'anonymous', via: 'anonymous', roles: [] });
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

  it('reads a tokens file of name:token lines, with roles after the token', async () => {
    assert.deepEqual(parseTokens(`# people\nalice:${ALICE}\n\n  ci : ci:with:colons:0123456789  developer, ac-writer\nbob:${BOB} reader\n`, 'f'), [
      { name: 'alice', token: ALICE },
      { name: 'ci', token: 'ci:with:colons:0123456789', roles: ['developer', 'ac-writer'] },
      { name: 'bob', token: BOB, roles: ['reader'] },
    ]);
    const file = path.join(tmpDir(), 'tokens');
    await writeFile(file, `alice:${ALICE} reader\nci:ci:with:colons:0123456789 ci\n`);
    const access = createAccess(authSchema.parse({ type: 'token', tokensFile: file }));
    const ci = await access.authenticator.authenticate(withAuth('Bearer ci:with:colons:0123456789'));
    assert.deepEqual(ci, { name: 'ci', via: 'token', roles: ['ci'] });
    assert.ok(access.policy.callerFor(ci).may('ac-write', 'any'));

    await writeFile(file, `alice:${ALICE} wizard\n`);
    assert.throws(() => createAccess(authSchema.parse({ tokensFile: file })), /token of "alice": unknown role "wizard"/);
    await writeFile(file, 'no-colon-here\n');
    assert.throws(() => TokenAuthenticator.fromFile(file), /tokens:1: expected name:token/);
    assert.throws(() => TokenAuthenticator.fromFile(path.join(tmpDir(), 'missing')), /cannot read tokens file/);
  });

  it('warns at start about each token principal that would be refused everything', () => {
    const capture = captureLogger('warn');
    createAccess(
      authSchema.parse({
        tokens: [
          { name: 'alice', token: ALICE, roles: ['reader'] },
          { name: 'nobody', token: DAVE },
          { name: 'granted', token: BOB },
        ],
        principals: [{ name: 'gran*', roles: ['reader'] }],
      }),
      capture.log,
    );
    const warned = capture.records().filter((r) => /no roles and no matching grant/.test(String(r.msg)));
    assert.deepEqual(
      warned.map((r) => r.principal),
      ['nobody'],
    );
  });

  it('serves the anonymous admin without authenticators, and nobody anonymous with them unless configured', () => {
    const open = createAccess(authSchema.parse({ type: 'none' }));
    assert.ok(open.anonymousHasPermissions);
    assert.ok(open.policy.callerFor(open.anonymous!).may('admin', 'x'));
    const closed = createAccess(authSchema.parse({ tokens: [{ name: 'alice', token: ALICE }] }));
    assert.equal(closed.anonymous, undefined);
    assert.throws(() => closed.authenticator.authenticate({ metadata: new Metadata() }), /no credentials/);
    const limited = createAccess(
      authSchema.parse({ tokens: [{ name: 'alice', token: ALICE }], anonymous: { name: 'guest', roles: ['reader'], instances: ['pub'] } }),
    );
    const guest = limited.policy.callerFor(limited.authenticator.authenticate({ metadata: new Metadata() }) as never);
    assert.equal(guest.principal.name, 'guest');
    assert.ok(guest.may('cas-read', 'pub'));
    assert.ok(!guest.may('cas-read', 'private'));
    assert.ok(!guest.may('cas-write', 'pub'));
    // A `*` grant is for authenticated principals: it never opens the server to anonymous callers.
    const star = createAccess(authSchema.parse({ tokens: [{ name: 'alice', token: ALICE }], anonymous: {}, principals: [{ name: '*', roles: ['admin'] }] }));
    assert.equal(star.anonymousHasPermissions, false);
  });

  it('validates the auth config: old forms, roles, contradictions', () => {
    assert.equal(authSchema.safeParse({ type: 'token' }).success, false);
    assert.match(authSchema.safeParse({ type: 'token' }).error!.issues[0]!.message, /"tokens" or "tokensFile"/);
    assert.equal(authSchema.safeParse({ type: 'token', tokens: [{ name: 'x', token: 'short' }] }).success, false);
    assert.equal(authSchema.safeParse({ type: 'mtls' }).success, false);
    assert.equal(authSchema.safeParse({ type: 'none', tokens: [{ name: 'bob', token: BOB }] }).success, false);
    assert.match(authSchema.safeParse({ anonymous: false }).error!.issues[0]!.message, /every call would be refused/);
    assert.match(authSchema.safeParse({ principals: [{ name: 'x', roles: ['wizard'] }] }).error!.issues[0]!.message, /unknown role "wizard"/);
    assert.ok(authSchema.safeParse({ roles: { wizard: ['run'] }, principals: [{ name: 'x', roles: ['wizard'] }] }).success);
    assert.equal(authSchema.safeParse({ principals: [{ name: 'x', permissions: ['fly'] }] }).success, false);
    const jwt = { jwksFile: '/k', issuer: 'i', audience: 'a' };
    assert.ok(authSchema.safeParse({ jwt }).success);
    assert.equal(authSchema.safeParse({ jwt: { ...jwt, algorithms: ['none'] } }).success, false);
    assert.equal(authSchema.safeParse({ jwt: { ...jwt, jwksUrl: 'https://x/jwks' } }).success, false);
    assert.equal(authSchema.safeParse({ jwt: { jwksFile: '/k', issuer: 'i' } }).success, false);
  });

  it('matches name globs: * any run of characters, ? one, the rest literal', () => {
    assert.ok(globMatcher('ci/*')('ci/a/b'));
    assert.ok(!globMatcher('ci/*')('cid'));
    assert.ok(globMatcher('')(''));
    assert.ok(!globMatcher('')('a'));
    assert.ok(globMatcher('a?c')('abc'));
    assert.ok(!globMatcher('a.c')('abc'));
    assert.ok(globMatcher('*')(''));
  });

  it('gives roles presets, redefinitions and instance scopes their meaning', () => {
    const p = new AccessPolicy({ roles: { reader: ['cas-read'], builder: ['execute'] }, principals: [{ name: 'w', roles: ['worker'] }] });
    const reader = p.callerFor({ name: 'r', via: 'jwt', roles: ['reader', 'unknown-role'] });
    assert.ok(reader.may('cas-read', 'x'));
    assert.ok(!reader.may('ac-read', 'x'), 'reader was redefined without ac-read');
    const worker = p.callerFor({ name: 'w', via: 'mtls', roles: [] });
    assert.ok(worker.mayEverywhere('worker'));
    assert.ok(!worker.mayAnywhere('ac-read'));
    assert.ok(!worker.mayAnywhere('execute'));
    const admin = p.callerFor({ name: 'a', via: 'token', roles: ['admin'] });
    for (const perm of ['cas-read', 'cas-write', 'ac-read', 'ac-write', 'execute', 'run', 'worker'] as const) assert.ok(admin.may(perm, 'q'));
    assert.equal(p.callerFor({ name: 'anonymous', via: 'token', roles: [] }).owner, 'anonymous');
    assert.equal(new AccessPolicy({ anonymous: { name: 'anonymous' } }).callerFor({ name: 'anonymous', via: 'anonymous', roles: [] }).owner, '');
  });
});
