import { z } from 'zod';
import { invalidArgument } from '../common/errors.js';
import { isLoopbackHost } from '../common/loopback.js';
import type { Logger } from '../common/logger.js';
import { AccessPolicy, type AnonymousAccess, type Caller, PERMISSIONS, PRESET_ROLES, type Principal } from './access-policy.js';
import { CredentialChain, MIN_TOKEN_LENGTH, readTokensFile, TokenAuthenticator } from './auth.js';
import { DEFAULT_JWT_ALGORITHMS, JwtAuthenticator } from './jwt-authenticator.js';

const permission = z.enum(PERMISSIONS);
const roleList = z.array(z.string().min(1));

/** What a grant gives: roles, single permissions, and the instance-name globs they hold on (default: all). */
const grantFields = {
  roles: roleList.optional(),
  permissions: z.array(permission).optional(),
  instances: z.array(z.string()).optional(),
};

const jwtSchema = z
  .object({
    /** A JSON Web Key Set file, read at start. */
    jwksFile: z.string().min(1).optional(),
    /** A JSON Web Key Set URL, fetched (and cached) when a token names a key not seen yet. */
    jwksUrl: z.string().url().optional(),
    issuer: z.string().min(1),
    audience: z.string().min(1),
    principalClaim: z.string().min(1).default('sub'),
    /** A claim holding the principal's roles (a string or an array of strings). */
    rolesClaim: z.string().min(1).optional(),
    algorithms: z
      .array(z.string().min(1))
      .min(1)
      .default([...DEFAULT_JWT_ALGORITHMS]),
    clockToleranceSeconds: z.number().nonnegative().default(30),
  })
  .strict()
  .superRefine((j, ctx) => {
    if (!j.jwksFile === !j.jwksUrl) ctx.addIssue({ code: z.ZodIssueCode.custom, message: 'give exactly one of jwksFile and jwksUrl', path: ['jwksFile'] });
    if (j.jwksUrl && !/^https?:\/\//.test(j.jwksUrl))
      ctx.addIssue({ code: z.ZodIssueCode.custom, message: 'jwksUrl must be http:// or https://', path: ['jwksUrl'] });
    if (j.algorithms.some((a) => a.toLowerCase() === 'none'))
      ctx.addIssue({ code: z.ZodIssueCode.custom, message: '"none" is never accepted: it means an unsigned token', path: ['algorithms'] });
  });

export const authSchema = z
  .object({
    /** The older form: `none`, or `token` with tokens or tokensFile. Kept so existing configs still load. */
    type: z.enum(['none', 'token']).optional(),
    tokens: z.array(z.object({ name: z.string().min(1), token: z.string().min(MIN_TOKEN_LENGTH), roles: roleList.optional() }).strict()).optional(),
    /** Lines of `name:token [role,...]`; kept out of the main config so that file can be world-readable. */
    tokensFile: z.string().min(1).optional(),
    jwt: jwtSchema.optional(),
    /** Principals named by verified client certificates (the TLS section must require them). */
    mtls: z
      .object({ principalFrom: z.enum(['cn', 'san-uri', 'san-dns', 'san-email']).default('cn') })
      .strict()
      .optional(),
    /**
     * Calls without credentials: false refuses them, an object names what
     * they may do. Unset: on (as admin) when no authenticator is configured,
     * off otherwise.
     */
    anonymous: z.union([z.literal(false), z.object({ name: z.string().min(1).default('anonymous'), ...grantFields }).strict()]).optional(),
    /** Roles by name: redefine a preset or add one. */
    roles: z.record(z.string().min(1), z.array(permission)).optional(),
    /** Grants to principals whose name matches `name` (a glob); a principal gets every matching grant. */
    principals: z.array(z.object({ name: z.string().min(1), ...grantFields }).strict()).optional(),
  })
  .strict()
  .superRefine((c, ctx) => {
    const issue = (message: string, path: string[]) => ctx.addIssue({ code: z.ZodIssueCode.custom, message, path });
    const authenticators = hasAuthenticator(c);
    if (c.type === 'token' && !c.tokens?.length && !c.tokensFile) issue('token authentication needs "tokens" or "tokensFile"', ['tokens']);
    if (c.type === 'none' && authenticators) issue('type "none" contradicts the tokens, jwt or mtls given with it', ['type']);
    if (c.anonymous === false && !authenticators)
      issue('anonymous is false but no authenticator (tokens, jwt, mtls) is configured: every call would be refused', ['anonymous']);
    const known = new Set([...Object.keys(PRESET_ROLES), ...Object.keys(c.roles ?? {})]);
    const check = (roles: readonly string[] | undefined, path: (string | number)[]) => {
      for (const r of roles ?? []) {
        if (!known.has(r)) ctx.addIssue({ code: z.ZodIssueCode.custom, message: `unknown role "${r}" (known: ${[...known].join(', ')})`, path });
      }
    };
    for (const [i, t] of (c.tokens ?? []).entries()) check(t.roles, ['tokens', i, 'roles']);
    for (const [i, p] of (c.principals ?? []).entries()) check(p.roles, ['principals', i, 'roles']);
    if (c.anonymous) check(c.anonymous.roles, ['anonymous', 'roles']);
  });

export type AuthConfig = z.output<typeof authSchema>;

function hasAuthenticator(c: Pick<AuthConfig, 'tokens' | 'tokensFile' | 'jwt' | 'mtls'>): boolean {
  return Boolean(c.tokens?.length || c.tokensFile || c.jwt || c.mtls);
}

/** What a server needs to let calls in: who made each (authenticator) and what they may do (policy). */
export interface Access {
  authenticator: CredentialChain;
  policy: AccessPolicy;
  /** The anonymous principal, when calls without credentials are served. */
  anonymous?: Principal;
  /** Whether callers without credentials may do anything at all. */
  anonymousHasPermissions: boolean;
  /**
   * Set when no authenticator is configured and the anonymous principal holds
   * every permission on every instance: then every call is that one caller
   * and every check passes, so the server binds it to each call without the
   * interceptor (whose machinery cost ~12 µs per call, 9 % of AC-hit throughput).
   */
  openCaller?: Caller;
}

/**
 * Builds the authenticators and the policy from the config, reading the
 * tokens and JWKS files once. Every token principal that would be refused
 * everything (no roles of its own, no matching grant) is warned about: fail
 * closed, but say so.
 */
export function createAccess(config: AuthConfig, log?: Logger): Access {
  const configured = hasAuthenticator(config);
  // No authenticator: today's trusted-loopback behaviour, everyone is the one anonymous admin.
  const anonymous: AnonymousAccess | undefined = configured
    ? config.anonymous || undefined
    : config.anonymous === undefined
      ? { name: 'anonymous', roles: ['admin'] }
      : config.anonymous || undefined;
  const policy = new AccessPolicy({
    ...(config.roles ? { roles: config.roles } : {}),
    ...(config.principals ? { principals: config.principals } : {}),
    ...(anonymous ? { anonymous } : {}),
    ...(log ? { log } : {}),
  });
  let tokens: TokenAuthenticator | undefined;
  if (config.tokens?.length || config.tokensFile) {
    const fromFile = config.tokensFile ? readTokensFile(config.tokensFile) : [];
    for (const t of fromFile) policy.checkRoles(t.roles ?? [], `${config.tokensFile}: token of "${t.name}"`);
    tokens = new TokenAuthenticator([...(config.tokens ?? []), ...fromFile]);
    for (const p of tokens.principals) {
      if (!policy.callerFor(p).hasAny) {
        log?.warn(
          { principal: p.name },
          `principal "${p.name}" (token) has no roles and no matching grant: every call it makes will be refused; give its token roles or add it to auth.principals`,
        );
      }
    }
  }
  const jwt = config.jwt ? new JwtAuthenticator(config.jwt) : undefined;
  if (config.jwt?.jwksUrl?.startsWith('http://') && !isLoopbackUrl(config.jwt.jwksUrl)) {
    log?.warn({ jwksUrl: config.jwt.jwksUrl }, 'the JWKS is fetched over plain HTTP: whoever sits on the path can hand the server keys of their own');
  }
  if (!tokens && !jwt && !config.mtls && !anonymous) throw invalidArgument('auth: no authenticator and no anonymous access: every call would be refused');
  const chain = new CredentialChain({
    ...(tokens ? { tokens } : {}),
    ...(jwt ? { jwt } : {}),
    ...(config.mtls ? { mtls: { principalFrom: config.mtls.principalFrom } } : {}),
    ...(policy.anonymous ? { anonymous: policy.anonymous } : {}),
  });
  const anonymousCaller = policy.anonymous && policy.callerFor(policy.anonymous);
  const open = !configured && anonymousCaller !== undefined && PERMISSIONS.every((p) => anonymousCaller.mayEverywhere(p));
  return {
    authenticator: chain,
    policy,
    ...(open ? { openCaller: anonymousCaller } : {}),
    ...(policy.anonymous ? { anonymous: policy.anonymous } : {}),
    anonymousHasPermissions: anonymousCaller?.hasAny ?? false,
  };
}

function isLoopbackUrl(url: string): boolean {
  return isLoopbackHost(new URL(url).hostname);
}
