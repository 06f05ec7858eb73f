import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { connect, createServer, type PeerCertificate, type TLSSocket } from 'node:tls';
import { describe, it } from 'node:test';
import { Metadata } from '@grpc/grpc-js';
import { CredentialChain } from '../../../src/grpc/auth.js';
import { certNames, parseSubjectAltName, principalFromCert } from '../../../src/grpc/cert-identity.js';
import { makeCertAuthority } from '../../../support/certs.js';
import { tmpDir } from '../../../support/tmp.js';

/** The client certificate a TLS server sees after a real handshake that required and verified it. */
async function handshake(ca: ReturnType<typeof makeCertAuthority>, client: { cert: string; key: string }): Promise<PeerCertificate> {
  const server = ca.server();
  const tls = createServer({
    cert: readFileSync(server.cert),
    key: readFileSync(server.key),
    ca: readFileSync(ca.cert),
    requestCert: true,
    rejectUnauthorized: true,
  });
  const seen = new Promise<PeerCertificate>((resolve, reject) =>
    tls.once('secureConnection', (s: TLSSocket) => {
      if (!s.authorized) reject(new Error(`client not verified: ${s.authorizationError}`));
      resolve(s.getPeerCertificate());
      s.end();
    }),
  );
  await new Promise<void>((resolve) => tls.listen(0, '127.0.0.1', resolve));
  const port = (tls.address() as { port: number }).port;
  const socket = connect({ host: '127.0.0.1', port, ca: readFileSync(ca.cert), cert: readFileSync(client.cert), key: readFileSync(client.key) });
  socket.on('error', () => {});
  try {
    return await seen;
  } finally {
    socket.destroy();
    tls.close();
  }
}

describe('principals from client certificates', () => {
  it('reads the CN and the URI SAN of a certificate verified in a real handshake', async () => {
    const ca = makeCertAuthority(tmpDir('repr-ca-'));
    const cert = await handshake(ca, ca.client('alice'));
    assert.deepEqual(certNames(cert), { cn: 'alice', uris: ['repr://alice'], dns: [], emails: [] });
    assert.equal(principalFromCert(cert, 'cn'), 'alice');
    assert.equal(principalFromCert(cert, 'san-uri'), 'repr://alice');
    assert.equal(principalFromCert(cert, 'san-dns'), undefined);

    // Through the authenticator, as the interceptor calls it.
    const chain = new CredentialChain({ mtls: { principalFrom: 'cn' } });
    assert.deepEqual(chain.authenticate({ metadata: new Metadata(), certificate: cert }), { name: 'alice', via: 'mtls', roles: [] });
    const byDns = new CredentialChain({ mtls: { principalFrom: 'san-dns' } });
    assert.throws(() => byDns.authenticate({ metadata: new Metadata(), certificate: cert }), /client certificate has no san-dns/);
    // No certificate and no anonymous access: refused.
    assert.throws(() => chain.authenticate({ metadata: new Metadata() }), /no credentials: this server wants a client certificate/);
  });

  it('splits subjectaltname without letting a quoted value smuggle in an entry', () => {
    assert.deepEqual(parseSubjectAltName('DNS:a.example, URI:repr://b, email:c@d, IP Address:127.0.0.1'), [
      { kind: 'DNS', value: 'a.example' },
      { kind: 'URI', value: 'repr://b' },
      { kind: 'email', value: 'c@d' },
      { kind: 'IP Address', value: '127.0.0.1' },
    ]);
    // Node quotes a value holding ", ": it is one URI, not a URI and a DNS name.
    assert.deepEqual(parseSubjectAltName('URI:"repr://x, DNS:admin", DNS:real'), [
      { kind: 'URI', value: 'repr://x, DNS:admin' },
      { kind: 'DNS', value: 'real' },
    ]);
  });
});
