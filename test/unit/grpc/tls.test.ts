import assert from 'node:assert/strict';
import { copyFileSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { PassThrough } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import { connect as tlsConnect } from 'node:tls';
import { makeGenericClientConstructor, Server, type ServerUnaryCall, type ServiceDefinition, type sendUnaryData } from '@grpc/grpc-js';
import { Code, codeOf } from '../../../src/common/errors.js';
import { createLogger } from '../../../src/common/logger.js';
import { dial } from '../../../src/grpc/dial.js';
import { certNames } from '../../../src/grpc/cert-identity.js';
import { checkServerTls, ServerTls, type ServerTlsFiles } from '../../../src/grpc/tls.js';
import { type CertAuthority, type CertFiles, makeCertAuthority } from '../../../support/certs.js';
import { tmpDir } from '../../../support/tmp.js';

/** A logger whose lines the test reads. */
function capturedLogger() {
  const out = new PassThrough();
  const lines: Record<string, unknown>[] = [];
  out.on('data', (d: Buffer) => {
    for (const l of d.toString().split('\n')) if (l) lines.push(JSON.parse(l) as Record<string, unknown>);
  });
  return { log: createLogger('info', out), lines };
}

/** Copies a certificate and key to the paths a listener serves from, as an operator's rotation would. */
function install(files: CertFiles, at: ServerTlsFiles): void {
  copyFileSync(files.key, at.keyFile);
  copyFileSync(files.cert, at.certFile);
}

const bytes = (f: CertFiles) => ({ cert: readFileSync(f.cert), key: readFileSync(f.key) });

const refusedNaming = (fn: () => unknown, pattern: RegExp) =>
  assert.throws(fn, (e: unknown) => codeOf(e) === Code.INVALID_ARGUMENT && pattern.test((e as Error).message));

describe('server TLS files', () => {
  let ca: CertAuthority;
  let dir: string;
  before(() => {
    dir = tmpDir();
    ca = makeCertAuthority(path.join(dir, 'ca'));
  });

  it('refuses a cut-short certificate, a key of another certificate and a CA bundle cut short, naming the file', () => {
    const a = ca.server('a');
    const b = ca.server('b');
    const files = { certFile: '/live/cert.pem', keyFile: '/live/key.pem', clientCaFile: '/live/ca.pem' };
    const cert = readFileSync(a.cert);
    refusedNaming(() => checkServerTls(files, { ...bytes(a), cert: cert.subarray(0, 400) }), /\/live\/cert\.pem ends in the middle of a certificate/);
    refusedNaming(() => checkServerTls(files, { ...bytes(a), cert: Buffer.from('not a certificate\n') }), /\/live\/cert\.pem holds no PEM certificate/);
    refusedNaming(
      () => checkServerTls(files, { cert, key: readFileSync(b.key) }),
      /the key in \/live\/key\.pem is not the key of the certificate in \/live\/cert\.pem/,
    );
    refusedNaming(() => checkServerTls(files, { cert, key: Buffer.from('garbage') }), /\/live\/key\.pem holds no usable private key/);
    const caPem = readFileSync(ca.cert);
    refusedNaming(
      () => checkServerTls(files, { ...bytes(a), ca: Buffer.concat([caPem, caPem.subarray(0, 300)]) }),
      /client CA file \/live\/ca\.pem ends in the middle/,
    );
    const ok = checkServerTls(files, { ...bytes(a), ca: caPem });
    assert.match(ok.serial, /^[0-9A-F]+$/);
  });

  it('takes a rotated certificate, and keeps the old one when the new files are wrong, saying so', async () => {
    const live = { certFile: path.join(dir, 'live.pem'), keyFile: path.join(dir, 'live.key') };
    const first = ca.server('first');
    install(first, live);
    const { log, lines } = capturedLogger();
    // An hour between checks: the test calls check() itself.
    const tls = ServerTls.open({ ...live, reloadIntervalMs: 3_600_000, log });
    try {
      const served = tls.current.serial;
      assert.equal(await tls.check(), false, 'nothing changed');

      // Half-way through a rotation: the new key is in place, the certificate not yet.
      const second = ca.server('second');
      copyFileSync(second.key, live.keyFile);
      assert.equal(await tls.check(), false);
      assert.equal(tls.current.serial, served, 'still serving the first certificate');
      assert.ok(
        lines.some((l) => l.msg === 'new TLS certificate refused; still serving the previous one' && /is not the key of the certificate/.test(String(l.err))),
      );

      // A certificate written only in part.
      writeFileSync(live.certFile, readFileSync(second.cert).subarray(0, 500));
      assert.equal(await tls.check(), false);
      assert.equal(tls.current.serial, served);

      const changes: string[] = [];
      tls.onChange((m) => changes.push(m.serial));
      copyFileSync(second.cert, live.certFile);
      assert.equal(await tls.check(), true, 'the finished rotation takes effect');
      assert.notEqual(tls.current.serial, served);
      assert.deepEqual(changes, [tls.current.serial]);
      assert.ok(lines.some((l) => l.msg === 'TLS certificate reloaded' && l.serial === tls.current.serial));
      assert.deepEqual(tls.secureContextOptions().cert, readFileSync(second.cert));
    } finally {
      tls.close();
    }
  });

  it('refuses to start on files it cannot use, naming them', () => {
    const missing = path.join(dir, 'missing.pem');
    const a = ca.server('start');
    refusedNaming(
      () => ServerTls.open({ certFile: missing, keyFile: a.key, log: capturedLogger().log }),
      new RegExp(`cannot read TLS certificate file ${missing}`),
    );
    refusedNaming(() => ServerTls.open({ certFile: a.cert, keyFile: ca.server('other').key, log: capturedLogger().log }), /is not the key of the certificate/);
  });
});

type Echo = ReturnType<typeof certNames> | null;
const definition = {
  whoAmI: {
    path: '/repr.test.Tls/WhoAmI',
    requestStream: false,
    responseStream: false,
    requestSerialize: (b: Buffer) => b,
    requestDeserialize: (b: Buffer) => b,
    responseSerialize: (b: Buffer) => b,
    responseDeserialize: (b: Buffer) => b,
  },
} as ServiceDefinition;
const WhoClient = makeGenericClientConstructor(definition, 'Tls');

describe('the client certificate a TLS call carries', () => {
  let ca: CertAuthority;
  let server: Server;
  let tls: ServerTls;
  let port: number;
  before(async () => {
    ca = makeCertAuthority(tmpDir());
    const cert = ca.server();
    tls = ServerTls.open({ certFile: cert.cert, keyFile: cert.key, clientCaFile: ca.cert, log: capturedLogger().log });
    server = new Server();
    server.addService(definition, {
      whoAmI: (call: ServerUnaryCall<Buffer, Buffer>, cb: sendUnaryData<Buffer>) => {
        // What the mTLS authenticator reads: grpc-js's AuthContext of a real handshake.
        const cert = call.getAuthContext().sslPeerCertificate;
        cb(null, Buffer.from(JSON.stringify(cert ? certNames(cert) : null)));
      },
    });
    port = await new Promise<number>((resolve, reject) => server.bindAsync('127.0.0.1:0', tls.credentials, (e, p) => (e ? reject(e) : resolve(p))));
  });
  after(() => {
    tls.close();
    server.forceShutdown();
  });

  const ask = (files?: CertFiles) =>
    new Promise<Echo>((resolve, reject) => {
      const d = dial(`grpcs://127.0.0.1:${port}`, { tls: { caFile: ca.cert, ...(files ? { certFile: files.cert, keyFile: files.key } : {}) } });
      const client = new WhoClient(d.address, d.credentials, d.options);
      client.makeUnaryRequest(
        '/repr.test.Tls/WhoAmI',
        (b: Buffer) => b,
        (b: Buffer) => b,
        Buffer.alloc(0),
        (err, res?: Buffer) => {
          client.close();
          if (err) reject(err);
          else resolve(JSON.parse(res!.toString()) as Echo);
        },
      );
    });

  it("names the peer by its verified certificate's CN and subject alternative names", async () => {
    assert.deepEqual(await ask(ca.client('alice')), { cn: 'alice', uris: ['repr://alice'], dns: [], emails: [] });
  });

  it('refuses a client without a certificate, or with one of another CA, in the handshake', async () => {
    const other = makeCertAuthority(tmpDir(), 'other-ca');
    await assert.rejects(ask(), (e: unknown) => codeOf(e) === Code.UNAVAILABLE && /the server requires a client certificate/.test((e as Error).message));
    await assert.rejects(
      ask(other.client('mallory')),
      (e: unknown) => codeOf(e) === Code.UNAVAILABLE && /the server refused this client's certificate/.test((e as Error).message),
    );
    // Below gRPC: the handshake itself never yields a session for the stranger.
    const handshake = await new Promise<string>((resolve) => {
      const m = other.client('mallory-raw');
      const s = tlsConnect({ host: '127.0.0.1', port, ca: readFileSync(ca.cert), cert: readFileSync(m.cert), key: readFileSync(m.key), ALPNProtocols: ['h2'] });
      s.once('data', () => resolve('data'));
      s.once('error', (e) => resolve(`error ${e.message}`));
      s.once('close', () => resolve('closed'));
    });
    assert.notEqual(handshake, 'data');
  });
});
