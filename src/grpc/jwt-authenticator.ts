import { readFileSync } from 'node:fs';
import { createLocalJWKSet, createRemoteJWKSet, errors, type JSONWebKeySet, type JWTPayload, type JWTVerifyGetKey, jwtVerify } from 'jose';
import { Code, invalidArgument, ReprError } from '../common/errors.js';
import type { Principal } from './access-policy.js';

/**
 * Asymmetric algorithms only: with a symmetric one (HS*) every service that
 * can check a token can also mint one. `none` is never accepted.
 */
export const DEFAULT_JWT_ALGORITHMS = ['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512', 'EdDSA', 'Ed25519'] as const;

export interface JwtOptions {
  /** A JSON Web Key Set on disk, read once at start. */
  jwksFile?: string;
  /** A JSON Web Key Set served over HTTP(S), fetched when a token names a key not seen yet and cached. */
  jwksUrl?: string;
  issuer: string;
  audience: string;
  /** The claim that names the principal. */
  principalClaim: string;
  /** A claim holding roles: a string or an array of strings. */
  rolesClaim?: string;
  algorithms: readonly string[];
  /** Slack for clocks that disagree, applied to exp and nbf. */
  clockToleranceSeconds: number;
}

/** Three base64url parts (the signature empty for `alg: none`, which is then refused by name rather than as "unknown token"). */
export function looksLikeJwt(token: string): boolean {
  return /^[\w-]+\.[\w-]+\.[\w-]*$/.test(token);
}

const unauthenticated = (why: string) => new ReprError(Code.UNAUTHENTICATED, `invalid token: ${why}`);

/** A claim value for a message: claims are signed by the issuer, but still bounded, as they end up in logs. */
function shown(v: unknown): string {
  const s = typeof v === 'string' ? v : JSON.stringify(v);
  return JSON.stringify(s === undefined ? 'none' : s.length > 100 ? `${s.slice(0, 100)}...` : s);
}

/**
 * Verifies JSON Web Tokens against a key set: signature, algorithm, issuer,
 * audience, expiry (an `exp` is required: a token that never expires cannot
 * be taken back) and not-before. The principal is the `principalClaim`,
 * roles come from `rolesClaim`.
 */
export class JwtAuthenticator {
  private readonly keys: JWTVerifyGetKey;

  constructor(private readonly o: JwtOptions) {
    if (o.algorithms.includes('none')) throw invalidArgument('auth.jwt.algorithms: "none" is never accepted');
    if (o.jwksFile) {
      let jwks: JSONWebKeySet;
      try {
        jwks = JSON.parse(readFileSync(o.jwksFile, 'utf8')) as JSONWebKeySet;
      } catch (e) {
        throw invalidArgument(`cannot read the JWKS file ${o.jwksFile}: ${(e as Error).message}`);
      }
      try {
        this.keys = createLocalJWKSet(jwks);
      } catch (e) {
        throw invalidArgument(`${o.jwksFile} is not a JSON Web Key Set: ${(e as Error).message}`);
      }
    } else if (o.jwksUrl) {
      this.keys = createRemoteJWKSet(new URL(o.jwksUrl), { timeoutDuration: 5000, cooldownDuration: 30_000, cacheMaxAge: 10 * 60_000 });
    } else {
      throw invalidArgument('auth.jwt needs jwksFile or jwksUrl');
    }
  }

  async verify(token: string): Promise<Principal> {
    let payload: JWTPayload;
    try {
      ({ payload } = await jwtVerify(token, this.keys, {
        issuer: this.o.issuer,
        audience: this.o.audience,
        algorithms: [...this.o.algorithms],
        clockTolerance: this.o.clockToleranceSeconds,
        requiredClaims: ['exp'],
      }));
    } catch (e) {
      throw this.refusal(e);
    }
    const name = payload[this.o.principalClaim];
    if (typeof name !== 'string' || name === '') throw unauthenticated(`no "${this.o.principalClaim}" claim naming the principal`);
    return { name, via: 'jwt', roles: this.rolesOf(payload) };
  }

  private rolesOf(payload: JWTPayload): string[] {
    if (!this.o.rolesClaim) return [];
    const v = payload[this.o.rolesClaim];
    if (typeof v === 'string') return v.split(/[\s,]+/).filter(Boolean);
    if (Array.isArray(v)) return v.filter((r): r is string => typeof r === 'string');
    return [];
  }

  /** A precise reason, never the token: messages end up in logs. */
  private refusal(e: unknown): ReprError {
    if (e instanceof errors.JWTExpired) {
      const exp = typeof e.payload.exp === 'number' ? ` at ${new Date(e.payload.exp * 1000).toISOString()}` : '';
      return unauthenticated(`expired${exp}`);
    }
    if (e instanceof errors.JWTClaimValidationFailed) {
      const got = e.payload[e.claim];
      if (e.reason === 'missing') return unauthenticated(`no "${e.claim}" claim`);
      if (e.claim === 'iss') return unauthenticated(`wrong issuer ${shown(got)} (expected ${shown(this.o.issuer)})`);
      if (e.claim === 'aud') return unauthenticated(`wrong audience ${shown(got)} (expected ${shown(this.o.audience)})`);
      if (e.claim === 'nbf') return unauthenticated('not valid yet (nbf is in the future)');
      return unauthenticated(`claim "${e.claim}" is invalid: ${e.message}`);
    }
    if (e instanceof errors.JWSSignatureVerificationFailed) return unauthenticated('bad signature');
    if (e instanceof errors.JOSEAlgNotAllowed || e instanceof errors.JOSENotSupported) {
      return unauthenticated(`algorithm not allowed (this server accepts ${this.o.algorithms.join(', ')})`);
    }
    if (e instanceof errors.JWKSNoMatchingKey) return unauthenticated('signed with a key that is not in the key set');
    if (e instanceof errors.JWKSMultipleMatchingKeys) return unauthenticated('the key set holds several keys that match its header; give it a "kid"');
    if (e instanceof errors.JWSInvalid || e instanceof errors.JWTInvalid) return unauthenticated(`malformed JWT: ${e.message}`);
    // The key set could not be had (JWKS URL down, slow or serving garbage): the server's problem, not the caller's.
    if (e instanceof errors.JWKSTimeout)
      return new ReprError(Code.UNAVAILABLE, `cannot check the token: the key set at ${this.o.jwksUrl} did not answer in time`);
    return new ReprError(Code.UNAVAILABLE, `cannot check the token: ${(e as Error).message}`, { cause: e });
  }
}
