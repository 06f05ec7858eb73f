import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { createServer, type Server as HttpServer } from 'node:http';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { exportJWK, generateKeyPair, type JWK, SignJWT, UnsecuredJWT } from 'jose';
import { computeDigest, SHA256 } from '../../../src/common/digest.js';
import { Code } from '../../../src/common/errors.js';
import { ReapiClient } from '../../../src/reapi/reapi-client.js';
import type { ReprServer } from '../../../src/server/server.js';
import { startInProcess } from '../../../support/servers.js';
import { tmpDir } from '../../../support/tmp.js';

const ISSUER = 'https://idp.test';
const AUDIENCE = 'repr';

type Key = Awaited<ReturnType<typeof generateKeyPair>>['privateKey'];

async function keyPair(kid: string, alg = 'ES256'): Promise<{ privateKey: Key; jwk: JWK }> {
  const { privateKey, publicKey } = await generateKeyPair(alg);
  return { privateKey, jwk: { ...(await exportJWK(publicKey)), kid, alg, use: 'sig' } };
}

interface TokenOpts {
  key: Key;
  kid: string;
  alg?: string;
  sub?: string;
  iss?: string;
  aud?: string;
  roles?: unknown;
  exp?: number | string;
}

function sign(o: TokenOpts): Promise<string> {
  const jwt = new SignJWT({ ...(o.roles !== undefined ? { roles: o.roles } : {}) })
    .setProtectedHeader({ alg: o.alg ?? 'ES256', kid: o.kid })
    .setIssuer(o.iss ?? ISSUER)
    .setAudience(o.aud ?? AUDIENCE)
    .setIssuedAt()
    .setExpirationTime(o.exp ?? '10m');
  if (o.sub !== undefined) jwt.setSubject(o.sub);
  return jwt.sign(o.key);
}

/** A call's refusal: UNAUTHENTICATED with this reason, and never the token itself. */
const unauthenticated = (reason: RegExp, token: string) => (e: unknown) => {
  const err = e as { code?: number; details?: string };
  assert.equal(err.code, Code.UNAUTHENTICATED, err.details);
  assert.match(err.details ?? '', reason);
  assert.ok(!(err.details ?? '').includes(token.split('.')[2] || token), 'the token is not echoed');
  return true;
};

describe('JSON Web Token authentication', () => {
  let good: { privateKey: Key; jwk: JWK };
  let other: { privateKey: Key; jwk: JWK };
  let jwks: HttpServer;
  let jwksUrl: string;
  let fetches = 0;
  const servers: ReprServer[] = [];
  const clients: ReapiClient[] = [];

  before(async () => {
    good = await keyPair('k1');
    other = await keyPair('k1'); // the same kid, another key: a forgery
    jwks = createServer((_req, res) => {
      fetches++;
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ keys: [good.jwk] }));
    });
    await new Promise<void>((resolve) => jwks.listen(0, '127.0.0.1', resolve));
    const addr = jwks.address() as { port: number };
    jwksUrl = `http://127.0.0.1:${addr.port}/.well-known/jwks.json`;
  });
  after(async () => {
    for (const c of clients) c.close();
    for (const s of servers) await s.stop();
    jwks.close();
  });

  const start = async (jwt: Record<string, unknown>) => {
    const s = await startInProcess({
      dataDir: tmpDir(),
      execution: { enabled: false },
      auth: { jwt: { issuer: ISSUER, audience: AUDIENCE, rolesClaim: 'roles', ...jwt } },
    });
    servers.push(s);
    return s;
  };
  const client = (s: ReprServer, token: string) => {
    const c = new ReapiClient({ target: s.address, token });
    clients.push(c);
    return c;
  };
  const blob = Buffer.from('jwt blob');
  const digest = computeDigest(SHA256, blob);

  describe('with a key set from a file', () => {
    let server: ReprServer;
    before(async () => {
      const file = path.join(tmpDir(), 'jwks.json');
      writeFileSync(file, JSON.stringify({ keys: [good.jwk] }));
      server = await start({ jwksFile: file });
    });

    it('names the principal by sub and gives it the roles of the roles claim', async () => {
      const reader = client(server, await sign({ key: good.privateKey, kid: 'k1', sub: 'alice', roles: ['reader'] }));
      assert.deepEqual(await reader.findMissing([digest]), [digest]);
      await assert.rejects(reader.write(digest, blob), (e: { code?: number; details?: string }) => {
        assert.equal(e.code, Code.PERMISSION_DENIED);
        assert.match(e.details ?? '', /^principal "alice" lacks cas-write \(Write, on any instance\)$/);
        return true;
      });
      // A roles claim may be one string too.
      const dev = client(server, await sign({ key: good.privateKey, kid: 'k1', sub: 'bob', roles: 'developer' }));
      await dev.write(digest, blob);
      assert.deepEqual(await dev.findMissing([digest]), []);
      // No roles: authenticated, and allowed nothing but what is open to everyone authenticated.
      const none = client(server, await sign({ key: good.privateKey, kid: 'k1', sub: 'carol' }));
      await none.getCapabilities();
      await assert.rejects(none.findMissing([digest]), (e: { code?: number }) => e.code === Code.PERMISSION_DENIED);
    });

    it('refuses a wrong issuer, a wrong audience, an expired token, a bad signature and alg none, saying which', async () => {
      const cases: [string, RegExp][] = [
        [
          await sign({ key: good.privateKey, kid: 'k1', sub: 'a', iss: 'https://evil.test' }),
          /^invalid token: wrong issuer "https:\/\/evil.test" \(expected "https:\/\/idp.test"\)$/,
        ],
        [await sign({ key: good.privateKey, kid: 'k1', sub: 'a', aud: 'someone-else' }), /^invalid token: wrong audience "someone-else" \(expected "repr"\)$/],
        // Past the 30 s clock tolerance.
        [await sign({ key: good.privateKey, kid: 'k1', sub: 'a', exp: Math.floor(Date.now() / 1000) - 120 }), /^invalid token: expired at \d{4}-/],
        [await sign({ key: other.privateKey, kid: 'k1', sub: 'a' }), /^invalid token: bad signature$/],
        [new UnsecuredJWT({ sub: 'a' }).setIssuer(ISSUER).setAudience(AUDIENCE).setExpirationTime('10m').encode(), /^invalid token: algorithm not allowed/],
        [await sign({ key: (await keyPair('k9')).privateKey, kid: 'k9', sub: 'a' }), /^invalid token: signed with a key that is not in the key set$/],
        [await sign({ key: good.privateKey, kid: 'k1' }), /^invalid token: no "sub" claim naming the principal$/],
      ];
      for (const [token, reason] of cases) {
        await assert.rejects(client(server, token).getCapabilities(), unauthenticated(reason, token));
      }
    });

    it('accepts a token expired within the clock tolerance', async () => {
      const token = await sign({ key: good.privateKey, kid: 'k1', sub: 'late', roles: ['reader'], exp: Math.floor(Date.now() / 1000) - 5 });
      await client(server, token).getCapabilities();
    });

    it('refuses a symmetric algorithm unless configured', async () => {
      const secret = new TextEncoder().encode('0123456789abcdef0123456789abcdef');
      const token = await new SignJWT({})
        .setProtectedHeader({ alg: 'HS256', kid: 'k1' })
        .setSubject('a')
        .setIssuer(ISSUER)
        .setAudience(AUDIENCE)
        .setExpirationTime('10m')
        .sign(secret);
      await assert.rejects(client(server, token).getCapabilities(), unauthenticated(/^invalid token: algorithm not allowed/, token));
    });
  });

  describe('with a key set from a URL', () => {
    let server: ReprServer;
    before(async () => {
      server = await start({ jwksUrl });
    });

    it('fetches the key set when a token first needs it, holding the call meanwhile, and caches it', async () => {
      const before = fetches;
      const c = client(server, await sign({ key: good.privateKey, kid: 'k1', sub: 'dana', roles: ['developer'] }));
      // The request message is sent at once; it must survive the wait for the key set.
      await c.write(digest, blob);
      assert.deepEqual(await c.findMissing([digest]), []);
      await c.getCapabilities();
      assert.equal(fetches, before + 1, 'fetched once, then cached');
      const forged = await sign({ key: other.privateKey, kid: 'k1', sub: 'dana' });
      await assert.rejects(client(server, forged).getCapabilities(), unauthenticated(/^invalid token: bad signature$/, forged));
    });
  });

  it('refuses a config that would accept unsigned tokens', async () => {
    await assert.rejects(start({ jwksUrl, algorithms: ['none'] }), /"none" is never accepted/);
  });
});
