/**
 * Why a compiler command line should run here rather than remotely, or
 * undefined to send it. Only a compile to an object or assembly file (-c,
 * -S) is worth a round trip: a link reads every object and library just
 * written, -E and -M without an output print what the build tool reads next
 * on stdin of another process, and input from stdin cannot be sent.
 */
export function localReason(argv: readonly string[], patterns: readonly string[]): string | undefined {
  for (const p of patterns) {
    const re = globToRegExp(p);
    const hit = argv.find((a) => re.test(a));
    if (hit !== undefined) return `${hit} matches the local pattern ${p}`;
  }
  const args = argv.slice(1);
  if (args.includes('-E')) return 'preprocessing only (-E)';
  if ((args.includes('-M') || args.includes('-MM')) && !args.includes('-o')) return 'dependencies to stdout (-M)';
  if (args.includes('-')) return 'reads stdin';
  if (!args.includes('-c') && !args.includes('-S')) return 'not a compile (no -c or -S): a link or a query';
  return undefined;
}

/** `*` any run of characters, `?` one; the whole argument must match. */
export function globToRegExp(glob: string): RegExp {
  const body = glob
    .replace(/[.+^${}()|[\]\\]/g, '\\$&')
    .replace(/\*/g, '.*')
    .replace(/\?/g, '.');
  return new RegExp(`^${body}$`);
}

/**
 * The environment a compile needs beyond `repr run`'s defaults: variables
 * gcc and clang read for include paths, reproducible output and
 * dependency files. Anything else the user passes with -e.
 */
export const COMPILER_ENV = [
  'CPATH',
  'C_INCLUDE_PATH',
  'CPLUS_INCLUDE_PATH',
  'OBJC_INCLUDE_PATH',
  'SOURCE_DATE_EPOCH',
  'DEPENDENCIES_OUTPUT',
  'SUNPRO_DEPENDENCIES',
  'GCC_EXEC_PREFIX',
  'COMPILER_PATH',
];
