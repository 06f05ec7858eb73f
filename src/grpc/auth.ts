import { createHash, timingSafeEqual } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type { PeerCertificate } from 'node:tls';
import { CallCredentials, InterceptingCall, type Interceptor, Metadata } from '@grpc/grpc-js';
import { Code, invalidArgument, ReprError } from '../common/errors.js';
import type { Principal } from './access-policy.js';
import { type CertPrincipalSource, principalFromCert } from './cert-identity.js';
import { type JwtAuthenticator, looksLikeJwt } from './jwt-authenticator.js';

export type { Principal } from './access-policy.js';

/**
 * What a call shows of its caller: its request metadata and, on a TLS
 * connection whose client presented a certificate the handshake verified,
 * that certificate.
 */
export interface CallCredentialsSeen {
  metadata: Metadata;
  certificate?: PeerCertificate;
}

/**
 * Decides who made a call. May answer asynchronously (a JWT whose key set
 * must be fetched first); grpc-js holds the call's messages until it does.
 * It reads the metadata before returning: the caller strips the
 * authorization header from it right after. Throws ReprError
 * UNAUTHENTICATED when the credentials are missing or wrong.
 */
export interface Authenticator {
  authenticate(call: CallCredentialsSeen): Principal | Promise<Principal>;
}

/** The metadata key under which handlers find the authenticated principal's name. */
export const PRINCIPAL_METADATA_KEY = 'x-repr-principal';

/** The name the access interceptor put in a call's metadata, if the call was authenticated. */
export function principalOf(metadata: Metadata): string | undefined {
  const v = metadata.get(PRINCIPAL_METADATA_KEY)[0];
  return typeof v === 'string' ? v : undefined;
}

export interface TokenEntry {
  name: string;
  token: string;
  /** Roles the token carries, on every instance. */
  roles?: readonly string[];
}

/** Shorter tokens are guessable; the config refuses them rather than trusting people to pick long ones. */
export const MIN_TOKEN_LENGTH = 16;

const sha256 = (s: string): Buffer => createHash('sha256').update(s, 'utf8').digest();

/**
 * Static bearer tokens, one per user or machine. Tokens are compared as
 * SHA-256 digests with timingSafeEqual: digests always have equal length, so
 * neither the comparison time nor an early length mismatch tells an attacker
 * how much of a guess was right. Every entry is compared, matched or not.
 */
export class TokenAuthenticator {
  private readonly entries: { principal: Principal; digest: Buffer }[];

  constructor(tokens: readonly TokenEntry[]) {
    if (tokens.length === 0) throw invalidArgument('token authentication needs at least one token; it would refuse every call');
    const seen = new Set<string>();
    this.entries = tokens.map(({ name, token, roles }) => {
      if (!name) throw invalidArgument('every token needs a name');
      if (token.length < MIN_TOKEN_LENGTH) throw invalidArgument(`token of "${name}" is shorter than ${MIN_TOKEN_LENGTH} characters`);
      if (/\s/.test(token)) throw invalidArgument(`token of "${name}" contains whitespace, which an authorization header cannot carry`);
      const digest = sha256(token);
      const key = digest.toString('hex');
      // One token for two names would make the principal depend on list order.
      if (seen.has(key)) throw invalidArgument(`token of "${name}" is also given to another name`);
      seen.add(key);
      return { principal: { name, via: 'token', roles: [...(roles ?? [])] }, digest };
    });
  }

  /** Reads `name:token [role,...]` lines; `#` comments and blank lines are skipped. Read once, at startup. */
  static fromFile(file: string): TokenAuthenticator {
    return new TokenAuthenticator(readTokensFile(file));
  }

  /** The principals the tokens name. */
  get principals(): Principal[] {
    return this.entries.map((e) => e.principal);
  }

  /** The principal this token belongs to, or undefined. */
  find(token: string): Principal | undefined {
    const presented = sha256(token);
    let found: Principal | undefined;
    for (const e of this.entries) {
      const same = timingSafeEqual(presented, e.digest);
      if (same) found = e.principal;
    }
    return found;
  }
}

/**
 * `name:token` or `name:token role1,role2`. The name ends at the first
 * colon (the token may contain colons); tokens never contain whitespace, so
 * what follows the first blank after the token is its roles.
 */
export function parseTokens(text: string, where: string): TokenEntry[] {
  const entries: TokenEntry[] = [];
  text.split('\n').forEach((raw, i) => {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) return;
    const colon = line.indexOf(':');
    if (colon <= 0) throw invalidArgument(`${where}:${i + 1}: expected name:token`);
    const rest = line.slice(colon + 1).trim();
    const blank = rest.search(/\s/);
    const token = blank < 0 ? rest : rest.slice(0, blank);
    const roles =
      blank < 0
        ? []
        : rest
            .slice(blank)
            .split(/[\s,]+/)
            .filter(Boolean);
    entries.push({ name: line.slice(0, colon).trim(), token, ...(roles.length > 0 ? { roles } : {}) });
  });
  return entries;
}

export function readTokensFile(file: string): TokenEntry[] {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    throw invalidArgument(`cannot read tokens file ${file}: ${(e as Error).message}`);
  }
  return parseTokens(text, file);
}

/** The token of the one `authorization: Bearer <token>` header, or UNAUTHENTICATED. */
export function bearerToken(values: readonly (string | Buffer)[]): string {
  const m = values.length === 1 && typeof values[0] === 'string' ? /^Bearer +(\S+) *$/i.exec(values[0]) : null;
  if (!m) throw new ReprError(Code.UNAUTHENTICATED, 'no usable credentials: expected one "authorization: Bearer <token>" header');
  return m[1]!;
}

export interface CredentialChainOptions {
  tokens?: TokenAuthenticator;
  jwt?: JwtAuthenticator;
  /** Take the principal from a verified client certificate. */
  mtls?: { principalFrom: CertPrincipalSource };
  /** The principal of calls without credentials; undefined refuses them. */
  anonymous?: Principal;
}

/**
 * The configured ways in, tried per call in a fixed order. A bearer token,
 * when the server takes any, must be valid: a caller that presents a wrong
 * one is refused, never served as anonymous. Without one, a verified client
 * certificate names the principal; without either, the anonymous principal
 * if there is one.
 */
export class CredentialChain implements Authenticator {
  private readonly wanted: string;

  constructor(private readonly o: CredentialChainOptions) {
    const ways = [...(o.tokens || o.jwt ? ['"authorization: Bearer <token>" (repr --token or REPR_TOKEN)'] : []), ...(o.mtls ? ['a client certificate'] : [])];
    this.wanted = ways.length > 0 ? ways.join(' or ') : 'nothing it can check: it takes no credentials';
  }

  /** Whether a bearer token can be checked at all; a server that takes none ignores the header. */
  private get takesBearer(): boolean {
    return this.o.tokens !== undefined || this.o.jwt !== undefined;
  }

  authenticate({ metadata, certificate }: CallCredentialsSeen): Principal | Promise<Principal> {
    const auth = metadata.get('authorization');
    if (auth.length > 0 && this.takesBearer) {
      const token = bearerToken(auth);
      const p = this.o.tokens?.find(token);
      if (p) return p;
      if (this.o.jwt && looksLikeJwt(token)) return this.o.jwt.verify(token);
      // Never echo the token: error messages end up in logs.
      throw new ReprError(Code.UNAUTHENTICATED, 'invalid token: unknown token');
    }
    if (this.o.mtls && certificate) {
      const name = principalFromCert(certificate, this.o.mtls.principalFrom);
      if (!name) throw new ReprError(Code.UNAUTHENTICATED, `the client certificate has no ${this.o.mtls.principalFrom} to name the principal`);
      return { name, via: 'mtls', roles: [] };
    }
    if (this.o.anonymous) return this.o.anonymous;
    throw new ReprError(Code.UNAUTHENTICATED, `no credentials: this server wants ${this.wanted}`);
  }
}

/**
 * Adds `authorization: Bearer <token>` to every call of a client. Call
 * credentials would do the same, but grpc-js sends them only over TLS
 * channels, and repr's channels are plaintext; an interceptor works on both.
 */
export function bearerInterceptor(token: string): Interceptor {
  const value = `Bearer ${token}`;
  return (options, nextCall) =>
    new InterceptingCall(nextCall(options), {
      start(metadata, listener, next) {
        // A copy: callers may reuse one Metadata object for several calls.
        const md = metadata.clone();
        md.set('authorization', value);
        next(md, listener);
      },
    });
}

/** The same header as call credentials, for when channels use TLS (grpc-js drops call credentials on insecure ones). */
export function bearerCallCredentials(token: string): CallCredentials {
  return CallCredentials.createFromMetadataGenerator((_options, callback) => {
    const md = new Metadata();
    md.set('authorization', `Bearer ${token}`);
    callback(null, md);
  });
}
