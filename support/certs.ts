import { execFileSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';

/** PEM files of one certificate: the certificate and its PKCS#8 private key. */
export interface CertFiles {
  cert: string;
  key: string;
}

export interface CertAuthority extends CertFiles {
  dir: string;
  /** A server certificate for 127.0.0.1, ::1 and localhost, signed by this CA. */
  server(name?: string, opts?: { days?: number }): CertFiles;
  /** A client certificate with subject CN=`cn` (and SAN URI `repr://cn`) signed by this CA. */
  client(cn: string): CertFiles;
}

function openssl(args: string[], cwd: string): void {
  execFileSync('openssl', args, { cwd, stdio: ['ignore', 'ignore', 'pipe'] });
}

/**
 * A throw-away certificate authority made with the openssl command line, as
 * an operator would make one (see examples/tls). Keys are RSA 2048 in PKCS#8
 * PEM, which every client involved reads: Node's TLS, grpc-js and Bazel's
 * Netty (which refuses PKCS#1 client keys).
 */
export function makeCertAuthority(dir: string, name = 'repr-test-ca'): CertAuthority {
  mkdirSync(dir, { recursive: true });
  const ca = { cert: path.join(dir, `${name}.pem`), key: path.join(dir, `${name}.key`) };
  openssl(['genpkey', '-algorithm', 'RSA', '-pkeyopt', 'rsa_keygen_bits:2048', '-out', ca.key], dir);
  openssl(['req', '-x509', '-new', '-key', ca.key, '-sha256', '-days', '2', '-subj', `/CN=${name}`, '-out', ca.cert], dir);
  let serial = 0;
  const sign = (base: string, subject: string, ext: string, days = 2): CertFiles => {
    serial++;
    const files = { cert: path.join(dir, `${base}.pem`), key: path.join(dir, `${base}.key`) };
    const csr = path.join(dir, `${base}.csr`);
    const extFile = path.join(dir, `${base}.ext`);
    writeFileSync(extFile, ext);
    openssl(['genpkey', '-algorithm', 'RSA', '-pkeyopt', 'rsa_keygen_bits:2048', '-out', files.key], dir);
    openssl(['req', '-new', '-key', files.key, '-subj', subject, '-out', csr], dir);
    openssl(
      [
        'x509',
        '-req',
        '-in',
        csr,
        '-CA',
        ca.cert,
        '-CAkey',
        ca.key,
        '-set_serial',
        String(serial + 1000),
        '-days',
        String(days),
        '-sha256',
        '-extfile',
        extFile,
        '-out',
        files.cert,
      ],
      dir,
    );
    return files;
  };
  return {
    dir,
    ...ca,
    server: (base = 'server', opts = {}) =>
      sign(
        base,
        '/CN=localhost',
        'subjectAltName=IP:127.0.0.1,IP:::1,DNS:localhost\nextendedKeyUsage=serverAuth\nkeyUsage=digitalSignature,keyEncipherment\n',
        opts.days,
      ),
    client: (cn) =>
      sign(`client-${cn}`, `/CN=${cn}`, `subjectAltName=URI:repr://${cn}\nextendedKeyUsage=clientAuth\nkeyUsage=digitalSignature,keyEncipherment\n`),
  };
}
