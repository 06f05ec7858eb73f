/** What every remote command gets from this shell unless told otherwise. */
export const DEFAULT_ENV = ['PATH', 'LANG', 'LC_ALL', 'TZ', 'TERM'];

/**
 * A command's environment: the named variables this shell has, then each
 * `NAME=VALUE` (or `NAME` alone, for this shell's value) given with --env.
 */
export function commandEnv(
  flags: readonly string[],
  names: readonly string[] = DEFAULT_ENV,
  env: NodeJS.ProcessEnv = process.env,
): { name: string; value: string }[] {
  const out = new Map<string, string>();
  for (const name of names) if (env[name] !== undefined) out.set(name, env[name]!);
  for (const e of flags) {
    const i = e.indexOf('=');
    if (i < 0) out.set(e, env[e] ?? '');
    else out.set(e.slice(0, i), e.slice(i + 1));
  }
  return [...out].map(([name, value]) => ({ name, value }));
}
