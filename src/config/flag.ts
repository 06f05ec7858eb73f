import { invalidArgument } from '../common/errors.js';
import { parseByteSize } from '../common/units.js';

/**
 * How a flag's text becomes a value. Variadic kinds (`list`, `properties`)
 * take several words after one flag, or the flag repeated; `grants`
 * (`name=role,role`) is repeated, one grant each time.
 */
export type FlagKind = 'string' | 'list' | 'switch' | 'int' | 'positive' | 'size' | 'properties' | 'grants';

/**
 * A command-line flag and the config field it overrides, declared once: the
 * command's options, the overlay onto the config file and the defaults shown
 * in help all come from it.
 */
export interface Flag<C> {
  /** As commander spells it: '-l, --listen <host:port>'. */
  flags: string;
  description: string;
  kind: FlagKind;
  /** The config field it sets, dotted ('execution.executors'). */
  path?: string;
  /** For a flag whose field depends on its value (a URL or a file): the field, dotted. */
  pathOf?: (value: never) => string;
  /** The field is a list: the flag's items are added to the config file's rather than replacing them. */
  append?: boolean;
  /** What goes at `path`, from the parsed value (default: the value itself). */
  toConfig?: (value: never) => unknown;
  /** For a flag without a field of its own: changes the compiled config instead. */
  applyCompiled?: (config: C, value: never) => C;
  /** Where help finds the default, for flags without `path`. */
  defaultOf?: (config: C) => unknown;
  /** Help's text for a default that depends on the machine or on other fields. */
  defaultText?: string;
  /** No default: the command needs it, from the flag or the config file. */
  required?: boolean;
}

/** A flag's longest name, for messages: '--executors'. */
export function flagName<C>(flag: Flag<C>): string {
  return /--[\w-]+/.exec(flag.flags)?.[0] ?? flag.flags;
}

/**
 * Parses one word given to a flag; `previous` is what the earlier words of a
 * variadic flag gave. Throws INVALID_ARGUMENT naming the flag.
 */
export function parseFlagValue<C>(flag: Flag<C>, text: string, previous: unknown): unknown {
  const name = flagName(flag);
  switch (flag.kind) {
    case 'string':
    case 'switch':
      return text;
    case 'list':
      return [...((previous as string[] | undefined) ?? []), text];
    case 'int': {
      const n = Number(text);
      if (!Number.isInteger(n) || n < 0) throw invalidArgument(`${name} takes a non-negative integer, not "${text}"`);
      return n;
    }
    case 'positive': {
      const n = Number(text);
      if (!(n > 0)) throw invalidArgument(`${name} takes a positive number, not "${text}"`);
      return n;
    }
    case 'size': {
      const n = parseByteSize(text);
      if (n === undefined) throw invalidArgument(`${name}: "${text}" is not a size (e.g. 512MiB, 10GiB)`);
      return n;
    }
    case 'properties':
      return addProperty((previous as Record<string, string[]> | undefined) ?? {}, text, name);
    case 'grants':
      return [...((previous as unknown[] | undefined) ?? []), parseGrant(text, name)];
  }
}

/** `name=role[,role...]`: the principals a name glob matches get these roles. */
export function parseGrant(text: string, flag: string): { name: string; roles: string[] } {
  const i = text.indexOf('=');
  const roles = text
    .slice(i + 1)
    .split(',')
    .map((r) => r.trim())
    .filter(Boolean);
  if (i <= 0 || roles.length === 0) throw invalidArgument(`${flag} takes name=role[,role...], not "${text}"`);
  return { name: text.slice(0, i), roles };
}

/** name=value into a map of lists: a name given twice offers both values. */
export function addProperty(into: Record<string, string[]>, pair: string, flag: string): Record<string, string[]> {
  const i = pair.indexOf('=');
  if (i <= 0) throw invalidArgument(`${flag} takes name=value, not "${pair}"`);
  const name = pair.slice(0, i);
  return { ...into, [name]: [...(into[name] ?? []), pair.slice(i + 1)] };
}

/**
 * The config file's content with the given flags on top. `flagValue` is the
 * parsed value of a flag, undefined when it was not given.
 */
export function overlayFlags<C>(input: unknown, flags: readonly Flag<C>[], flagValue: (flag: Flag<C>) => unknown): unknown {
  let out: unknown = input ?? {};
  for (const flag of flags) {
    const value = flagValue(flag);
    if (value === undefined) continue;
    const path = flag.pathOf ? flag.pathOf(value as never) : flag.path;
    if (path === undefined) continue;
    const keys = path.split('.');
    let v = flag.toConfig ? flag.toConfig(value as never) : value;
    const existing = getPath(out, keys);
    if (flag.append && Array.isArray(existing) && Array.isArray(v)) v = [...existing, ...v];
    out = setPath(out, keys, v);
  }
  return out;
}

/** Applies the flags that change the compiled config rather than a field. */
export function applyCompiledFlags<C>(config: C, flags: readonly Flag<C>[], flagValue: (flag: Flag<C>) => unknown): C {
  let out = config;
  for (const flag of flags) {
    const value = flagValue(flag);
    if (value !== undefined && flag.applyCompiled) out = flag.applyCompiled(out, value as never);
  }
  return out;
}

/** The default a flag stands for, as help shows it, or undefined if it has none worth showing. */
export function flagDefault<C>(flag: Flag<C>, defaults: () => C): string | undefined {
  if (flag.defaultText !== undefined) return flag.defaultText;
  // A transformed value is not what the flag takes, so its field's default says nothing about the flag.
  if (flag.required || flag.kind === 'switch' || flag.toConfig) return undefined;
  const config = defaults();
  const value = flag.defaultOf ? flag.defaultOf(config) : flag.path !== undefined ? getPath(config, flag.path.split('.')) : undefined;
  if (value === undefined) return undefined;
  if (flag.kind === 'size' && typeof value === 'number') return formatByteSize(value);
  if (flag.kind === 'properties' && typeof value === 'object' && value !== null) {
    return Object.entries(value as Record<string, string | string[]>)
      .flatMap(([k, vs]) => (Array.isArray(vs) ? vs : [vs]).map((v) => `${k}=${v}`))
      .join(' ');
  }
  return Array.isArray(value) ? value.join(' ') : String(value);
}

/** The largest binary unit that divides the size evenly: 10737418240 is "10GiB". */
export function formatByteSize(bytes: number): string {
  for (const [unit, size] of [
    ['TiB', 2 ** 40],
    ['GiB', 2 ** 30],
    ['MiB', 2 ** 20],
    ['KiB', 2 ** 10],
  ] as const) {
    if (bytes >= size && bytes % size === 0) return `${bytes / size}${unit}`;
  }
  return `${bytes}B`;
}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/**
 * A copy of `obj` with `value` at `keys`; the original (the parsed file) is
 * left alone. Where the file holds something other than an object on the
 * way, the flag is not applied: validation then reports the file's mistake
 * instead of a flag hiding it.
 */
function setPath(obj: unknown, keys: readonly string[], value: unknown): unknown {
  if (keys.length === 0) return value;
  if (!isObject(obj)) return obj;
  const [key, ...rest] = keys as [string, ...string[]];
  const next = obj[key] === undefined && rest.length > 0 ? {} : obj[key];
  return { ...obj, [key]: setPath(next, rest, value) };
}

function getPath(obj: unknown, keys: readonly string[]): unknown {
  let at = obj;
  for (const key of keys) {
    if (!isObject(at)) return undefined;
    at = at[key];
  }
  return at;
}
