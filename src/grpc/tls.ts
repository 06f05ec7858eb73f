import { createPrivateKey, X509Certificate } from 'node:crypto';
import { readFileSync, statSync } from 'node:fs';
import { readFile, stat } from 'node:fs/promises';
import { createSecureContext, type SecureContextOptions } from 'node:tls';
import { ServerCredentials } from '@grpc/grpc-js';
import { invalidArgument } from '../common/errors.js';
import type { Logger } from '../common/logger.js';

/** The PEM files of a TLS listener. */
export interface ServerTlsFiles {
  /** The server's certificate, optionally followed by its intermediates. */
  certFile: string;
  keyFile: string;
  /** CA certificates a client's certificate must chain to; when set, every client must present one (mTLS). */
  clientCaFile?: string;
}

export interface ServerTlsOptions extends ServerTlsFiles {
  /** How often the files are looked at for a new certificate; default 10 s. */
  reloadIntervalMs?: number;
  log: Logger;
}

/** One generation of a listener's certificate: PEM bytes checked to belong together. */
export interface ServerTlsMaterial {
  cert: Buffer;
  key: Buffer;
  ca?: Buffer;
  /** The leaf certificate's serial number (hex) and end of validity, for logs. */
  serial: string;
  validTo: string;
}

type Bytes = { cert: Buffer; key: Buffer; ca?: Buffer };

const PEM_CERT = /-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g;

/**
 * Every certificate of a PEM file, parsed. Counting BEGIN lines catches a
 * file cut short in the middle of its last certificate, which a TLS library
 * would read as a shorter bundle without complaint.
 */
function certificates(pem: Buffer, file: string, what: string): X509Certificate[] {
  const text = pem.toString('utf8');
  const blocks = text.match(PEM_CERT) ?? [];
  const begun = text.split('-----BEGIN CERTIFICATE-----').length - 1;
  if (blocks.length !== begun) throw invalidArgument(`${what} ${file} ends in the middle of a certificate (a partial write?)`);
  if (blocks.length === 0) throw invalidArgument(`${what} ${file} holds no PEM certificate`);
  return blocks.map((b, i) => {
    try {
      return new X509Certificate(b);
    } catch (e) {
      throw invalidArgument(`certificate ${i + 1} of ${what} ${file} does not parse: ${(e as Error).message}`);
    }
  });
}

/**
 * Checks that the files' bytes make a usable listener: the certificate and
 * key parse, the key is the certificate's, the CA bundle holds whole
 * certificates, and Node builds a context from them. Throws
 * INVALID_ARGUMENT naming the file at fault.
 */
export function checkServerTls(files: ServerTlsFiles, bytes: Bytes): ServerTlsMaterial {
  const [leaf] = certificates(bytes.cert, files.certFile, 'TLS certificate file');
  let key: ReturnType<typeof createPrivateKey>;
  try {
    key = createPrivateKey(bytes.key);
  } catch (e) {
    throw invalidArgument(`TLS key file ${files.keyFile} holds no usable private key: ${(e as Error).message}`);
  }
  if (!leaf!.checkPrivateKey(key)) throw invalidArgument(`the key in ${files.keyFile} is not the key of the certificate in ${files.certFile}`);
  if (bytes.ca && files.clientCaFile) certificates(bytes.ca, files.clientCaFile, 'client CA file');
  try {
    createSecureContext({ cert: bytes.cert, key: bytes.key, ...(bytes.ca ? { ca: bytes.ca } : {}) });
  } catch (e) {
    throw invalidArgument(`cannot use TLS files ${[files.certFile, files.keyFile, files.clientCaFile].filter(Boolean).join(', ')}: ${(e as Error).message}`);
  }
  return { ...bytes, serial: leaf!.serialNumber, validTo: leaf!.validTo };
}

function readOrThrow(file: string, what: string): Buffer {
  try {
    return readFileSync(file);
  } catch (e) {
    throw invalidArgument(`cannot read ${what} ${file}: ${(e as Error).message}`);
  }
}

const fileList = (f: ServerTlsFiles) => [f.certFile, f.keyFile, ...(f.clientCaFile ? [f.clientCaFile] : [])];

const statSignature = (s: { dev: number; ino: number; size: number; mtimeMs: number }) => `${s.dev}:${s.ino}:${s.size}:${s.mtimeMs}`;

/**
 * What changes when a file is rewritten or replaced (renamed over, or a
 * symlink swapped as Kubernetes does). Taken before the files are read, so
 * that a write landing after the read shows up as a change next time.
 */
async function signature(files: ServerTlsFiles): Promise<string> {
  const parts = await Promise.all(fileList(files).map((f) => stat(f).then(statSignature, (e: NodeJS.ErrnoException) => `missing:${e.code}`)));
  return parts.join('|');
}

function signatureSync(files: ServerTlsFiles): string {
  return fileList(files)
    .map((f) => {
      try {
        return statSignature(statSync(f));
      } catch (e) {
        return `missing:${(e as NodeJS.ErrnoException).code}`;
      }
    })
    .join('|');
}

/**
 * Server credentials whose certificate can be replaced: grpc-js hands each
 * update to its HTTP/2 servers' `setSecureContext`, which affects new
 * connections only.
 */
class ReloadableServerCredentials extends ServerCredentials {
  constructor(requireClientCert: boolean, initial: SecureContextOptions) {
    // Both on, or both off: see ServerTls on why there is no optional mode.
    super({ requestCert: requireClientCert, rejectUnauthorized: requireClientCert }, initial);
  }

  update(options: SecureContextOptions): void {
    this.updateSecureContextOptions(options);
  }

  _equals(other: ServerCredentials): boolean {
    return other === this;
  }
}

const contextOptions = (m: ServerTlsMaterial): SecureContextOptions => ({ cert: m.cert, key: m.key, ...(m.ca ? { ca: m.ca } : {}) });

const sameBytes = (a: Bytes, b: Bytes) => a.cert.equals(b.cert) && a.key.equals(b.key) && (a.ca ?? Buffer.alloc(0)).equals(b.ca ?? Buffer.alloc(0));

/**
 * A TLS listener's certificate, kept current: the files are looked at every
 * interval, and a new certificate that passes `checkServerTls` replaces the
 * old one for new connections (open ones keep theirs). One that does not is
 * logged and ignored, so a rotation caught half-way, or a wrong key, leaves
 * the server serving with the previous certificate instead of refusing
 * everyone; the next change to the files is tried again.
 *
 * grpc-js's FileWatcherCertificateProvider is not used for this: when it
 * fails to read the files it hands the server null credentials, and the
 * server then drops every new connection until the files are fixed.
 *
 * With a client CA, a client certificate is required and must chain to it
 * (requestCert and rejectUnauthorized both on), so a client without one, or
 * with one from another CA, fails the handshake. A mode in which a client
 * certificate is optional is not offered: grpc-js 1.14 hands an interceptor
 * the peer certificate only when the handshake verified it, but its API
 * promises no such thing (AuthContext has no "verified" flag), so an
 * identity taken from an optional certificate would be one grpc-js change
 * away from an unverified one.
 */
export class ServerTls {
  readonly credentials: ServerCredentials;
  private readonly reloadable: ReloadableServerCredentials;
  readonly mtls: boolean;
  private material: ServerTlsMaterial;
  private tried: string;
  private readonly listeners = new Set<(m: ServerTlsMaterial) => void>();
  private readonly timer: NodeJS.Timeout;
  private checking?: Promise<boolean>;

  private constructor(
    private readonly o: ServerTlsOptions,
    material: ServerTlsMaterial,
    tried: string,
  ) {
    this.material = material;
    this.tried = tried;
    this.mtls = o.clientCaFile !== undefined;
    this.reloadable = new ReloadableServerCredentials(this.mtls, contextOptions(material));
    this.credentials = this.reloadable;
    this.timer = setInterval(() => void this.check(), o.reloadIntervalMs ?? 10_000);
    // Rotation must not keep a stopping server alive.
    this.timer.unref();
    this.warnIfExpired(material);
  }

  /** Reads and checks the files; throws INVALID_ARGUMENT naming the file at fault. */
  static open(o: ServerTlsOptions): ServerTls {
    const tried = signatureSync(o);
    const material = checkServerTls(o, {
      cert: readOrThrow(o.certFile, 'TLS certificate file'),
      key: readOrThrow(o.keyFile, 'TLS key file'),
      ...(o.clientCaFile ? { ca: readOrThrow(o.clientCaFile, 'client CA file') } : {}),
    });
    return new ServerTls(o, material, tried);
  }

  /** The certificate served now. */
  get current(): ServerTlsMaterial {
    return this.material;
  }

  /** The current certificate as node:tls and node:https take it (`setSecureContext`). */
  secureContextOptions(): SecureContextOptions {
    return contextOptions(this.material);
  }

  /** Calls `listener` with each new certificate; returns how to stop. */
  onChange(listener: (m: ServerTlsMaterial) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /**
   * Looks at the files now (the timer does so every interval). Resolves
   * true when a new certificate took effect.
   */
  check(): Promise<boolean> {
    this.checking ??= this.reload().finally(() => (this.checking = undefined));
    return this.checking;
  }

  private async reload(): Promise<boolean> {
    const sig = await signature(this.o);
    if (sig === this.tried) return false;
    this.tried = sig;
    let next: ServerTlsMaterial;
    try {
      const read = (f: string, what: string) => readFile(f).catch((e: Error) => Promise.reject(invalidArgument(`cannot read ${what} ${f}: ${e.message}`)));
      const [cert, key, ca] = await Promise.all([
        read(this.o.certFile, 'TLS certificate file'),
        read(this.o.keyFile, 'TLS key file'),
        this.o.clientCaFile ? read(this.o.clientCaFile, 'client CA file') : undefined,
      ]);
      next = checkServerTls(this.o, { cert, key, ...(ca ? { ca } : {}) });
    } catch (e) {
      this.o.log.error({ err: (e as Error).message, serial: this.material.serial }, 'new TLS certificate refused; still serving the previous one');
      return false;
    }
    if (sameBytes(next, this.material)) return false;
    this.material = next;
    this.reloadable.update(contextOptions(next));
    for (const l of this.listeners) l(next);
    this.o.log.info({ serial: next.serial, validTo: next.validTo }, 'TLS certificate reloaded');
    this.warnIfExpired(next);
    return true;
  }

  private warnIfExpired(m: ServerTlsMaterial): void {
    if (Date.parse(m.validTo) < Date.now())
      this.o.log.warn({ serial: m.serial, validTo: m.validTo }, 'the TLS certificate has expired; clients will refuse it');
  }

  /** Stops looking at the files. */
  close(): void {
    clearInterval(this.timer);
    this.listeners.clear();
  }
}
