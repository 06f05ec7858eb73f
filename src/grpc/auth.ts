import { createHash, timingSafeEqual } from 'node:crypto';
import { readFileSync } from 'node:fs';
import {
  CallCredentials,
  InterceptingCall,
  type Interceptor,
  Metadata,
  ResponderBuilder,
  ServerInterceptingCall,
  type ServerInterceptor,
  ServerListenerBuilder,
} from '@grpc/grpc-js';
import { z } from 'zod';
import { Code, invalidArgument, ReprError, toReprError } from '../common/errors.js';
import type { Logger } from '../common/logger.js';

/** Who made a call. */
export interface Principal {
  name: string;
}

/**
 * Decides who made a call from its request metadata. Synchronous on purpose:
 * it runs before every call, so it works from what it holds in memory.
 */
export interface Authenticator {
  /** Throws ReprError UNAUTHENTICATED when there are no credentials, PERMISSION_DENIED when they are wrong. */
  authenticate(metadata: Metadata): Principal;
}

/** The metadata key under which handlers find the authenticated principal's name. */
export const PRINCIPAL_METADATA_KEY = 'x-repr-principal';

/** The name authInterceptor put in a call's metadata, if the call was authenticated. */
export function principalOf(metadata: Metadata): string | undefined {
  const v = metadata.get(PRINCIPAL_METADATA_KEY)[0];
  return typeof v === 'string' ? v : undefined;
}

/** For a server on a trusted network (or loopback): every call is allowed. */
export class NoAuthenticator implements Authenticator {
  authenticate(_metadata: Metadata): Principal {
    return { name: 'anonymous' };
  }
}

export interface TokenEntry {
  name: string;
  token: string;
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
export class TokenAuthenticator implements Authenticator {
  private readonly entries: { name: string; digest: Buffer }[];

  constructor(tokens: readonly TokenEntry[]) {
    if (tokens.length === 0) throw invalidArgument('token authentication needs at least one token; it would refuse every call');
    const seen = new Set<string>();
    this.entries = tokens.map(({ name, token }) => {
      if (!name) throw invalidArgument('every token needs a name');
      if (token.length < MIN_TOKEN_LENGTH) throw invalidArgument(`token of "${name}" is shorter than ${MIN_TOKEN_LENGTH} characters`);
      if (/\s/.test(token)) throw invalidArgument(`token of "${name}" contains whitespace, which an authorization header cannot carry`);
      const digest = sha256(token);
      const key = digest.toString('hex');
      // One token for two names would make the principal depend on list order.
      if (seen.has(key)) throw invalidArgument(`token of "${name}" is also given to another name`);
      seen.add(key);
      return { name, digest };
    });
  }

  /** Reads `name:token` lines; `#` comments and blank lines are skipped. Read once, at startup. */
  static fromFile(file: string): TokenAuthenticator {
    return new TokenAuthenticator(readTokensFile(file));
  }

  authenticate(metadata: Metadata): Principal {
    const values = metadata.get('authorization');
    if (values.length === 0) {
      throw new ReprError(Code.UNAUTHENTICATED, 'no credentials: this server wants "authorization: Bearer <token>" (repr run --token or REPR_TOKEN)');
    }
    const m = values.length === 1 && typeof values[0] === 'string' ? /^Bearer +(\S+) *$/i.exec(values[0]) : null;
    if (!m) throw new ReprError(Code.UNAUTHENTICATED, 'no usable credentials: expected one "authorization: Bearer <token>" header');
    const presented = sha256(m[1]!);
    let name: string | undefined;
    for (const e of this.entries) {
      const same = timingSafeEqual(presented, e.digest);
      if (same) name = e.name;
    }
    // Never echo the token: error messages end up in logs.
    if (name === undefined) throw new ReprError(Code.PERMISSION_DENIED, 'invalid token');
    return { name };
  }
}

export function parseTokens(text: string, where: string): TokenEntry[] {
  const entries: TokenEntry[] = [];
  text.split('\n').forEach((raw, i) => {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) return;
    // The name ends at the first colon; the token may contain colons.
    const colon = line.indexOf(':');
    if (colon <= 0) throw invalidArgument(`${where}:${i + 1}: expected name:token`);
    entries.push({ name: line.slice(0, colon).trim(), token: line.slice(colon + 1).trim() });
  });
  return entries;
}

function readTokensFile(file: string): TokenEntry[] {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    throw invalidArgument(`cannot read tokens file ${file}: ${(e as Error).message}`);
  }
  return parseTokens(text, file);
}

export const authSchema = z
  .discriminatedUnion('type', [
    z.object({ type: z.literal('none') }).strict(),
    z
      .object({
        type: z.literal('token'),
        tokens: z.array(z.object({ name: z.string().min(1), token: z.string().min(MIN_TOKEN_LENGTH) }).strict()).optional(),
        /** Lines of name:token; kept out of the main config so that file can be world-readable. */
        tokensFile: z.string().min(1).optional(),
      })
      .strict(),
  ])
  // discriminatedUnion takes only plain objects, so the either-or rule lives here.
  .superRefine((c, ctx) => {
    if (c.type === 'token' && !c.tokens?.length && !c.tokensFile) {
      ctx.addIssue({ code: z.ZodIssueCode.custom, message: 'token authentication needs "tokens" or "tokensFile"', path: ['tokens'] });
    }
  });

export type AuthConfig = z.output<typeof authSchema>;

export function createAuthenticator(config: AuthConfig): Authenticator {
  switch (config.type) {
    case 'none':
      return new NoAuthenticator();
    case 'token':
      return new TokenAuthenticator([...(config.tokens ?? []), ...(config.tokensFile ? readTokensFile(config.tokensFile) : [])]);
  }
}

export interface AuthInterceptorOptions {
  /** Full method paths let through without credentials, e.g. "/grpc.health.v1.Health/Check". */
  exempt?: readonly string[];
  log?: Logger;
}

/**
 * Authenticates every call from its request metadata before the handler
 * exists: grpc-js creates the handler's stream only when metadata reaches the
 * end of the interceptor chain, so withholding it means no handler runs and
 * no message is read. A refused call ends with UNAUTHENTICATED or
 * PERMISSION_DENIED right away, for unary and streaming methods alike.
 *
 * A call that passes reaches its handler with the principal's name under
 * PRINCIPAL_METADATA_KEY and without the authorization header, so handlers
 * that log metadata cannot leak tokens. A client-sent principal header is
 * always dropped, or clients could name themselves.
 */
export function authInterceptor(auth: Authenticator, options: AuthInterceptorOptions = {}): ServerInterceptor {
  const exempt = new Set(options.exempt ?? []);
  const log = options.log;
  return (method, call) => {
    let refused = false;
    const listener = new ServerListenerBuilder()
      .withOnReceiveMetadata((metadata, next) => {
        const md = metadata.clone();
        md.remove(PRINCIPAL_METADATA_KEY);
        if (!exempt.has(method.path)) {
          let principal: Principal;
          try {
            principal = auth.authenticate(metadata);
          } catch (e) {
            refused = true;
            const err = toReprError(e);
            if (err.code !== Code.UNAUTHENTICATED && err.code !== Code.PERMISSION_DENIED) {
              log?.error({ err, method: method.path }, 'authenticator failed');
            } else {
              log?.warn({ method: method.path, peer: call.getPeer(), code: Code[err.code] }, `call refused: ${err.message}`);
            }
            // Sent on the next call, not through this one's responder: the call
            // never reached the handler, so there is nothing to intercept.
            call.sendStatus({ code: err.code, details: err.message });
            return;
          }
          md.remove('authorization');
          md.set(PRINCIPAL_METADATA_KEY, principal.name);
        }
        next(md);
      })
      // Without forwarded metadata nothing downstream reads, but say so explicitly.
      .withOnReceiveMessage((message, next) => {
        if (!refused) next(message);
      })
      .withOnReceiveHalfClose((next) => {
        if (!refused) next();
      })
      .build();
    const responder = new ResponderBuilder().withStart((next) => next(listener)).build();
    return new ServerInterceptingCall(call, responder);
  };
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
