import assert from 'node:assert/strict';
import { Metadata } from '@grpc/grpc-js';
import { describe, it } from 'node:test';
import { bindOpenCaller, callerOf } from '../../../src/grpc/access-interceptor.js';
import { PRINCIPAL_METADATA_KEY } from '../../../src/grpc/auth.js';
import { createAccess } from '../../../src/grpc/auth-config.js';

describe('a server open to everyone', () => {
  it('is open only with no authenticator and an anonymous admin', () => {
    assert.ok(createAccess({}).openCaller, 'the default: everyone is the anonymous admin');
    assert.equal(createAccess({ anonymous: { name: 'anonymous', roles: ['reader'] } }).openCaller, undefined, 'a limited anonymous principal needs the checks');
    assert.equal(
      createAccess({ tokens: [{ name: 'ci', token: 'open-test-token-0123456789', roles: ['ci'] }], anonymous: { name: 'anonymous', roles: ['admin'] } })
        .openCaller,
      undefined,
      'with tokens, callers are told apart (operation owners), so every call is authenticated',
    );
  });

  it('binds the anonymous admin to each call, drops credentials and a principal the client named itself', () => {
    const caller = createAccess({}).openCaller!;
    const md = new Metadata();
    md.set('authorization', 'Bearer secret-token-that-must-not-reach-handlers');
    md.set(PRINCIPAL_METADATA_KEY, 'root');
    bindOpenCaller(caller)(md);
    assert.deepEqual(md.get('authorization'), []);
    assert.deepEqual(md.get(PRINCIPAL_METADATA_KEY), [caller.principal.name]);
    assert.equal(callerOf(md), caller);
    assert.equal(callerOf(new Metadata()), undefined, 'only calls it saw');
  });
});
