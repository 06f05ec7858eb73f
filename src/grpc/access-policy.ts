import { invalidArgument } from '../common/errors.js';
import type { Logger } from '../common/logger.js';

/** What a principal may do. `admin` implies every other permission. */
export const PERMISSIONS = ['cas-read', 'cas-write', 'ac-read', 'ac-write', 'execute', 'run', 'worker', 'admin'] as const;
export type Permission = (typeof PERMISSIONS)[number];

/**
 * Role presets; `auth.roles` may redefine them or add more. A developer's
 * remotely executed results still reach the action cache, written by the
 * scheduler (the trusted path), but the developer cannot write it directly;
 * a worker can do nothing but work.
 */
export const PRESET_ROLES: Readonly<Record<string, readonly Permission[]>> = {
  reader: ['cas-read', 'ac-read'],
  developer: ['cas-read', 'cas-write', 'ac-read', 'execute', 'run'],
  ci: ['cas-read', 'cas-write', 'ac-read', 'execute', 'run', 'ac-write'],
  worker: ['worker', 'cas-read', 'cas-write'],
  admin: ['admin'],
};

/** How a principal proved who it is. */
export type PrincipalSource = 'anonymous' | 'token' | 'jwt' | 'mtls';

/** Who made a call. */
export interface Principal {
  name: string;
  via: PrincipalSource;
  /** Roles the credential itself carries (a token's roles, a JWT's roles claim). */
  roles: readonly string[];
}

/**
 * Permissions over some instance names. `instances` are globs (`*` any run
 * of characters, `/` included; `?` one character); undefined means every
 * instance, including ones nobody has named yet.
 */
export interface Grant {
  permissions: ReadonlySet<Permission>;
  instances?: readonly string[];
}

/** Compiles a glob of instance or principal names: `*` matches any run of characters, `?` one; the rest is literal. */
export function globMatcher(glob: string): (name: string) => boolean {
  if (!/[*?]/.test(glob)) return (name) => name === glob;
  const source = glob.replace(/[.+^${}()|[\]\\*?]/g, (c) => (c === '*' ? '[^]*' : c === '?' ? '[^]' : `\\${c}`));
  const re = new RegExp(`^${source}$`);
  return (name) => re.test(name);
}

/** A grant ready for checking: admin expanded, globs compiled. */
export interface CompiledGrant {
  permissions: ReadonlySet<Permission>;
  /** undefined: every instance. */
  instance?: (name: string) => boolean;
}

function compileGrant(g: Grant): CompiledGrant {
  const admin = g.permissions.has('admin');
  const permissions = admin ? new Set<Permission>(PERMISSIONS) : g.permissions;
  if (g.instances === undefined) return { permissions };
  const matchers = g.instances.map(globMatcher);
  return { permissions, instance: (name) => matchers.some((m) => m(name)) };
}

/**
 * An authenticated caller and what it may do: the principal and the union
 * of its grants. AccessPolicy.callerFor makes them; handlers find the one of
 * their call with callerOf(metadata).
 */
export class Caller {
  constructor(
    readonly principal: Principal,
    private readonly grants: readonly CompiledGrant[],
  ) {}

  /** Whether it holds the permission for this instance. */
  may(permission: Permission, instance: string): boolean {
    return this.grants.some((g) => g.permissions.has(permission) && (g.instance === undefined || g.instance(instance)));
  }

  /** Whether it holds the permission for at least one instance. */
  mayAnywhere(permission: Permission): boolean {
    return this.grants.some((g) => g.permissions.has(permission));
  }

  /** Whether it holds the permission for every instance, named or not. */
  mayEverywhere(permission: Permission): boolean {
    return this.grants.some((g) => g.permissions.has(permission) && g.instance === undefined);
  }

  /** Whether it holds any permission at all. */
  get hasAny(): boolean {
    return this.grants.some((g) => g.permissions.size > 0);
  }

  /**
   * What operations record as their owner. The anonymous principal is ""
   * (no authenticated principal has an empty name), so a token that happens
   * to be named "anonymous" owns nothing of the anonymous callers'.
   */
  get owner(): string {
    return this.principal.via === 'anonymous' ? '' : this.principal.name;
  }
}

/** A grant rule of the config: principals whose name matches `name` (a glob) get these roles and permissions. */
export interface PrincipalGrant {
  name: string;
  roles?: readonly string[];
  permissions?: readonly Permission[];
  instances?: readonly string[];
}

export interface AnonymousAccess {
  name: string;
  roles?: readonly string[];
  permissions?: readonly Permission[];
  instances?: readonly string[];
}

export interface AccessPolicyOptions {
  /** Extra roles and redefined presets. */
  roles?: Readonly<Record<string, readonly Permission[]>>;
  principals?: readonly PrincipalGrant[];
  /** The anonymous principal, or undefined when calls without credentials are refused. */
  anonymous?: AnonymousAccess;
  log?: Logger;
}

/**
 * Decides what each principal may do: the roles its credential carries
 * (every instance) plus every `principals` rule whose name glob matches it.
 * The anonymous principal gets what `anonymous` says and nothing from the
 * rules, so a `*` rule never opens the server to callers without credentials.
 */
export class AccessPolicy {
  private readonly roles: ReadonlyMap<string, ReadonlySet<Permission>>;
  private readonly rules: { matches: (name: string) => boolean; grant: CompiledGrant }[];
  private readonly anonymousGrant: CompiledGrant | undefined;
  private readonly unknownRolesSeen = new Set<string>();
  private readonly log: Logger | undefined;
  readonly anonymous: Principal | undefined;

  constructor(o: AccessPolicyOptions = {}) {
    this.log = o.log;
    this.roles = new Map(Object.entries({ ...PRESET_ROLES, ...o.roles }).map(([name, ps]) => [name, new Set(ps)]));
    this.rules = (o.principals ?? []).map((p, i) => ({
      matches: globMatcher(p.name),
      grant: this.grant(p, `auth.principals[${i}]`),
    }));
    if (o.anonymous) {
      this.anonymous = { name: o.anonymous.name, via: 'anonymous', roles: [] };
      this.anonymousGrant = this.grant(o.anonymous, 'auth.anonymous');
    }
  }

  /** Role names this policy knows. */
  get roleNames(): string[] {
    return [...this.roles.keys()];
  }

  /** Throws INVALID_ARGUMENT naming `where` if a role is unknown; for roles given in the config. */
  checkRoles(roles: readonly string[], where: string): void {
    for (const r of roles) {
      if (!this.roles.has(r)) throw invalidArgument(`${where}: unknown role "${r}" (known: ${this.roleNames.join(', ')})`);
    }
  }

  callerFor(principal: Principal): Caller {
    if (principal.via === 'anonymous') return new Caller(principal, this.anonymousGrant ? [this.anonymousGrant] : []);
    const grants: CompiledGrant[] = [];
    const carried = this.permissionsOf(principal.roles);
    if (carried.size > 0) grants.push(compileGrant({ permissions: carried }));
    for (const r of this.rules) if (r.matches(principal.name)) grants.push(r.grant);
    return new Caller(principal, grants);
  }

  private grant(g: { roles?: readonly string[]; permissions?: readonly Permission[]; instances?: readonly string[] }, where: string): CompiledGrant {
    this.checkRoles(g.roles ?? [], where);
    const permissions = new Set<Permission>([...this.permissionsOf(g.roles ?? []), ...(g.permissions ?? [])]);
    return compileGrant(g.instances === undefined ? { permissions } : { permissions, instances: g.instances });
  }

  /**
   * Roles a credential carries may name roles this server does not know (a
   * JWT issuer serves many services): those grant nothing, and are logged
   * once each.
   */
  private permissionsOf(roles: readonly string[]): Set<Permission> {
    const out = new Set<Permission>();
    for (const r of roles) {
      const ps = this.roles.get(r);
      if (ps) for (const p of ps) out.add(p);
      else if (!this.unknownRolesSeen.has(r) && this.unknownRolesSeen.size < 1000) {
        this.unknownRolesSeen.add(r);
        this.log?.warn({ role: r }, 'a credential carries a role this server does not know; it grants nothing');
      }
    }
    return out;
  }
}
