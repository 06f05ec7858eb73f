import type { SrvRecord } from 'node:dns';
import { Resolver } from 'node:dns/promises';
import { readFile } from 'node:fs/promises';
import { z } from 'zod';
import { type Clock, systemClock } from '../common/clock.js';
import { Code, invalidArgument, ReprError, unavailable } from '../common/errors.js';
import { normalizeTarget, parseTarget } from '../grpc/dial.js';

export { normalizeTarget };

/**
 * How a client finds servers. Asked before each run rather than once, so a
 * list that changes (a file rewritten by a deployment tool, DNS records)
 * takes effect without restarting anything.
 */
export interface Discovery {
  /** grpc://host:port or grpcs://host:port targets, best first; at least one, else UNAVAILABLE. */
  servers(): Promise<string[]>;
}

function checkTarget(target: string, where: string): string {
  try {
    return parseTarget(target);
  } catch (e) {
    throw invalidArgument(`${where}: ${(e as Error).message}`);
  }
}

/** A fixed list, from a flag or the config file. */
export class StaticDiscovery implements Discovery {
  private readonly targets: string[];

  constructor(list: readonly string[]) {
    if (list.length === 0) throw invalidArgument('server list is empty; give at least one grpc://host:port or grpcs://host:port');
    this.targets = list.map((t) => checkTarget(t, 'server list'));
  }

  async servers(): Promise<string[]> {
    return [...this.targets];
  }
}

/**
 * One target per line in a file that some other tool maintains; `#` starts
 * a comment. Read on every call: it is small, and reading it is cheaper than
 * getting a file watcher right across editors that replace files by rename.
 */
export class FileDiscovery implements Discovery {
  constructor(readonly path: string) {}

  async servers(): Promise<string[]> {
    let text: string;
    try {
      text = await readFile(this.path, 'utf8');
    } catch (e) {
      const err = e as NodeJS.ErrnoException;
      const why = err.code === 'ENOENT' ? 'it does not exist' : err.message;
      throw new ReprError(Code.UNAVAILABLE, `cannot read server list ${this.path}: ${why}`, { cause: err });
    }
    const targets: string[] = [];
    text.split('\n').forEach((raw, i) => {
      const line = raw.replace(/#.*/, '').trim();
      if (line !== '') targets.push(checkTarget(line, `${this.path}:${i + 1}`));
    });
    if (targets.length === 0) throw unavailable(`server list ${this.path} names no servers`);
    return targets;
  }
}

export interface DnsSrvOptions {
  /** Per lookup; an offline or slow resolver fails fast instead of holding up the run. Default 2000. */
  timeoutMs?: number;
  /** Whether the servers found are dialled with TLS (grpcs://); SRV records cannot say. Default false. */
  tls?: boolean;
  /** Replaces the DNS lookup (tests). */
  resolveSrv?: (name: string) => Promise<SrvRecord[]>;
  clock?: Clock;
}

/**
 * SRV records (e.g. `_repr._tcp.example.com`), as service meshes and
 * Kubernetes headless services publish them. Ordered by priority, then by
 * weight, highest first: deterministic, so every client tries the same
 * preferred server first rather than a weighted random pick per RFC 2782.
 */
export class DnsSrvDiscovery implements Discovery {
  private readonly timeoutMs: number;
  private readonly resolve: (name: string) => Promise<SrvRecord[]>;
  private readonly clock: Clock;
  private readonly scheme: string;

  constructor(
    readonly name: string,
    options: DnsSrvOptions = {},
  ) {
    if (!name) throw invalidArgument('DNS SRV discovery needs a name, e.g. _repr._tcp.example.com');
    this.scheme = options.tls ? 'grpcs' : 'grpc';
    this.timeoutMs = options.timeoutMs ?? 2000;
    this.resolve = options.resolveSrv ?? ((n) => this.lookup(n));
    this.clock = options.clock ?? systemClock;
  }

  async servers(): Promise<string[]> {
    let records: SrvRecord[];
    try {
      records = await this.resolve(this.name);
    } catch (e) {
      const err = e as NodeJS.ErrnoException;
      throw new ReprError(Code.UNAVAILABLE, `DNS SRV lookup of ${this.name} failed: ${err.code ?? err.message}`, { cause: err });
    }
    const targets = [...records]
      .sort((a, b) => a.priority - b.priority || b.weight - a.weight)
      .map((r) => normalizeTarget(`${this.scheme}://${r.name.replace(/\.$/, '')}:${r.port}`))
      .filter((t): t is string => t !== undefined);
    if (targets.length === 0) throw unavailable(`DNS SRV lookup of ${this.name} found no servers`);
    return targets;
  }

  private async lookup(name: string): Promise<SrvRecord[]> {
    // A fresh resolver per lookup so that cancel() on timeout affects only this one.
    const resolver = new Resolver({ timeout: this.timeoutMs, tries: 1 });
    let cancel = () => {};
    const timeout = new Promise<never>((_, reject) => {
      cancel = this.clock.setTimeout(() => {
        resolver.cancel();
        reject(Object.assign(new Error('timed out'), { code: `ETIMEOUT after ${this.timeoutMs} ms` }));
      }, this.timeoutMs);
    });
    try {
      return await Promise.race([resolver.resolveSrv(name), timeout]);
    } finally {
      cancel();
    }
  }
}

export const discoverySchema = z.discriminatedUnion('type', [
  z
    .object({
      type: z.literal('static'),
      servers: z
        .array(z.string().refine((s) => normalizeTarget(s) !== undefined, { message: 'expected grpc://host:port, grpcs://host:port or host:port' }))
        .min(1),
    })
    .strict(),
  z.object({ type: z.literal('file'), path: z.string().min(1) }).strict(),
  z.object({ type: z.literal('dns-srv'), name: z.string().min(1), tls: z.boolean().default(false) }).strict(),
]);

export type DiscoveryConfig = z.output<typeof discoverySchema>;

export function createDiscovery(config: DiscoveryConfig): Discovery {
  switch (config.type) {
    case 'static':
      return new StaticDiscovery(config.servers);
    case 'file':
      return new FileDiscovery(config.path);
    case 'dns-srv':
      return new DnsSrvDiscovery(config.name, { tls: config.tls });
  }
}

/**
 * The `--server` flag: `file:/etc/repr/servers`, `dns-srv:_repr._tcp.example.com`
 * (`dns-srv:grpcs://_repr._tcp.example.com` for servers that speak TLS), or a
 * comma-separated list of grpc://host:port / grpcs://host:port / host:port.
 */
export function discoveryFromSpec(spec: string): Discovery {
  const s = spec.trim();
  if (s.startsWith('file:')) {
    const p = s.slice('file:'.length);
    if (!p) throw invalidArgument(`server spec "${spec}": file: needs a path, e.g. file:/etc/repr/servers`);
    return new FileDiscovery(p);
  }
  if (s.startsWith('dns-srv:')) {
    const rest = s.slice('dns-srv:'.length);
    const scheme = /^(grpcs?):\/\//i.exec(rest)?.[1]?.toLowerCase();
    const name = scheme ? rest.slice(scheme.length + 3) : rest;
    if (!name) throw invalidArgument(`server spec "${spec}": dns-srv: needs a name, e.g. dns-srv:_repr._tcp.example.com`);
    return new DnsSrvDiscovery(name, { tls: scheme === 'grpcs' });
  }
  const list = s
    .split(',')
    .map((t) => t.trim())
    .filter((t) => t !== '');
  if (list.length === 0) throw invalidArgument('server spec is empty; give grpc://host:port, grpcs://host:port, file:PATH or dns-srv:NAME');
  return new StaticDiscovery(list);
}
