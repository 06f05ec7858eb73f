import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { computeDigest, SHA256 } from '../../../src/common/digest.js';
import { Code } from '../../../src/common/errors.js';
import { ReapiClient } from '../../../src/reapi/reapi-client.js';
import type { ReprServer } from '../../../src/server/server.js';
import { startInProcess } from '../../../support/servers.js';
import { tmpDir } from '../../../support/tmp.js';

const TOKEN = 'anon-test-token-0123456789';
const blob = Buffer.from('anonymous blob');
const digest = computeDigest(SHA256, blob);

const code = (expected: Code, message: RegExp) => (e: unknown) => {
  const err = e as { code?: number; details?: string };
  assert.equal(err.code, expected, err.details);
  assert.match(err.details ?? '', message);
  return true;
};

describe('calls without credentials', () => {
  const servers: ReprServer[] = [];
  const clients: ReapiClient[] = [];
  const start = async (auth: Record<string, unknown>) => {
    const s = await startInProcess({ dataDir: tmpDir(), execution: { enabled: false }, auth });
    servers.push(s);
    return s;
  };
  const client = (s: ReprServer, o: { token?: string; instanceName?: string } = {}) => {
    const c = new ReapiClient({ target: s.address, ...o });
    clients.push(c);
    return c;
  };
  after(async () => {
    for (const c of clients) c.close();
    for (const s of servers) await s.stop();
  });

  describe('served as a configured anonymous principal with limited roles', () => {
    let server: ReprServer;
    before(async () => {
      server = await start({ tokens: [{ name: 'ci', token: TOKEN, roles: ['ci'] }], anonymous: { name: 'guest', roles: ['reader'], instances: ['public'] } });
    });

    it('may read where its grant says, and nothing more', async () => {
      await client(server, { token: TOKEN, instanceName: 'public' }).write(digest, blob);
      const guest = client(server, { instanceName: 'public' });
      assert.equal((await guest.read(digest)).toString(), 'anonymous blob');
      await assert.rejects(guest.write(digest, blob), code(Code.PERMISSION_DENIED, /^principal "guest" lacks cas-write \(Write, on any instance\)$/));
      await assert.rejects(
        client(server, { instanceName: 'private' }).findMissing([digest]),
        code(Code.PERMISSION_DENIED, /principal "guest" lacks cas-read or cas-write \(FindMissingBlobs, instance "private"\)/),
      );
      // A wrong token is never taken for no token.
      await assert.rejects(
        client(server, { token: 'wrong-token-0123456789abc', instanceName: 'public' }).read(digest),
        code(Code.UNAUTHENTICATED, /invalid token: unknown token/),
      );
    });
  });

  describe('refused when anonymous access is off', () => {
    let server: ReprServer;
    before(async () => {
      server = await start({ tokens: [{ name: 'ci', token: TOKEN, roles: ['ci'] }], anonymous: false });
    });

    it('answers UNAUTHENTICATED, saying what it wants', async () => {
      await assert.rejects(client(server).getCapabilities(), code(Code.UNAUTHENTICATED, /^no credentials: this server wants "authorization: Bearer <token>"/));
      await client(server, { token: TOKEN }).getCapabilities();
    });
  });

  describe('on a server without authenticators', () => {
    let server: ReprServer;
    before(async () => {
      server = await start({});
    });

    it('is the anonymous admin, as before roles existed', async () => {
      const c = client(server);
      await c.write(digest, blob);
      assert.deepEqual(await c.findMissing([digest]), []);
    });
  });
});
