import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { COMPILER_ENV, localReason } from '../client/cc-args.js';
import { commandEnv, DEFAULT_ENV } from '../client/command-env.js';
import { connectOrStart, DaemonHungUp, execThroughDaemon } from '../client/daemon-client.js';
import { type DaemonKey, socketPath } from '../client/daemon-protocol.js';
import { RUN_FAILED_EXIT, signalExit } from '../client/exit-codes.js';

// `repr exec` and `repr cc`, started by bin/repr.js without the rest of the
// CLI: a build runs them once per command, and commander, grpc-js and the
// config schemas would cost each one more than the daemon does. Only node:
// modules and the daemon's protocol are loaded; flags are parsed by hand.

const REPR_BIN = fileURLToPath(new URL('../../../bin/repr.js', import.meta.url));

const HELP = {
  exec: `Usage: repr exec [options] -- COMMAND [ARGS...]

Runs one command remotely through this user's repr daemon (started on
demand): it sees the roots' files as repr run's commands do, its output
streams back, its changes are written back before repr exits, and its exit
code is repr's. A build tool can put it in front of any rule's command.
`,
  cc: `Usage: repr cc [options] COMPILER ARGS...

A compiler wrapper (make CC="repr cc gcc", or CMake's
-DCMAKE_C_COMPILER_LAUNCHER="repr;cc"): compiles (-c, -S) run remotely
through the repr daemon as repr exec does; links, -E, -M to stdout, input
from stdin and anything matching a --local pattern run here.
`,
  options: `
Options:
  -s, --server <spec>       where to run, as repr run's --server (default $REPR_SERVER, else grpc://127.0.0.1:8980)
  --cas <url>               CAS to put files in, if not the server
  -r, --root <dir>          a directory shown to the command (repeatable; default: the current directory, or $REPR_ROOTS, colon-separated)
  -e, --env <NAME[=VALUE]>  an environment variable to pass (repeatable); ${DEFAULT_ENV.join(', ')} pass by default
  -p, --platform <name=value>  a platform property the executor must offer (repeatable)
  --timeout <seconds>       kill the command after this long (default: the server's)
  --idle-timeout <seconds>  how long a daemon this starts waits for work before it stops (default 600)
  --instance <name>         REAPI instance name
  --token <token>           bearer token (default $REPR_TOKEN)
  --tls-ca, --tls-cert, --tls-key <file>  TLS files for grpcs:// servers (default $REPR_TLS_CA, ...)
`,
  ccOnly: `  --local <pattern>         run here when an argument matches this glob (* and ?) (repeatable; also $REPR_CC_LOCAL, space-separated)
`,
};

interface ExecFlags {
  server?: string;
  cas?: string;
  roots: string[];
  env: string[];
  platform: { name: string; value: string }[];
  timeoutMs: number;
  idleTimeout?: string;
  instance: string;
  token?: string;
  tls: { caFile?: string; certFile?: string; keyFile?: string };
  local: string[];
}

class UsageError extends Error {}

const VALUED: Record<string, string> = {
  '-s': 'server',
  '--server': 'server',
  '--cas': 'cas',
  '-r': 'root',
  '--root': 'root',
  '-e': 'env',
  '--env': 'env',
  '-p': 'platform',
  '--platform': 'platform',
  '--timeout': 'timeout',
  '--idle-timeout': 'idle-timeout',
  '--instance': 'instance',
  '--token': 'token',
  '--tls-ca': 'tls-ca',
  '--tls-cert': 'tls-cert',
  '--tls-key': 'tls-key',
  '--local': 'local',
};

/** Options up to `--` (exec) or the first word that is not one (cc, where it is the compiler). */
function parse(sub: 'exec' | 'cc', args: string[]): { flags: ExecFlags; command: string[] } | 'help' {
  const flags: ExecFlags = { roots: [], env: [], platform: [], timeoutMs: 0, instance: '', tls: {}, local: [] };
  let i = 0;
  for (; i < args.length; i++) {
    let a = args[i]!;
    if (a === '--') {
      i++;
      break;
    }
    if (a === '-h' || a === '--help') return 'help';
    if (!a.startsWith('-')) {
      if (sub === 'exec') throw new UsageError(`unexpected ${a}: put the command after --`);
      break;
    }
    let value: string | undefined;
    const eq = a.indexOf('=');
    if (a.startsWith('--') && eq > 0) {
      value = a.slice(eq + 1);
      a = a.slice(0, eq);
    }
    const name = VALUED[a];
    if (!name || (name === 'local' && sub !== 'cc')) throw new UsageError(`unknown option ${a}`);
    value ??= args[++i];
    if (value === undefined) throw new UsageError(`${a} needs a value`);
    if (name === 'server') flags.server = value;
    else if (name === 'cas') flags.cas = value;
    else if (name === 'root') flags.roots.push(value);
    else if (name === 'env') flags.env.push(value);
    else if (name === 'platform') {
      const k = value.indexOf('=');
      if (k <= 0) throw new UsageError(`--platform takes name=value, not "${value}"`);
      flags.platform.push({ name: value.slice(0, k), value: value.slice(k + 1) });
    } else if (name === 'timeout' || name === 'idle-timeout') {
      const n = Number(value);
      if (!(n > 0)) throw new UsageError(`${a} takes a positive number of seconds, not "${value}"`);
      if (name === 'timeout') flags.timeoutMs = n * 1000;
      else flags.idleTimeout = value;
    } else if (name === 'instance') flags.instance = value;
    else if (name === 'token') flags.token = value;
    else if (name === 'tls-ca') flags.tls.caFile = value;
    else if (name === 'tls-cert') flags.tls.certFile = value;
    else if (name === 'tls-key') flags.tls.keyFile = value;
    else flags.local.push(value);
  }
  const command = args.slice(i);
  if (command.length === 0) throw new UsageError(sub === 'exec' ? 'nothing to run: give a command after --' : 'no compiler: repr cc COMPILER ARGS...');
  return { flags, command };
}

/** `repr exec` or `repr cc` with the arguments after it; resolves to the exit code. */
export async function execMain(sub: 'exec' | 'cc', args: string[]): Promise<number> {
  let parsed: ReturnType<typeof parse>;
  try {
    parsed = parse(sub, args);
  } catch (e) {
    if (!(e instanceof UsageError)) throw e;
    process.stderr.write(`repr: ${e.message}; see repr ${sub} --help\n`);
    return RUN_FAILED_EXIT;
  }
  if (parsed === 'help') {
    process.stdout.write(HELP[sub] + HELP.options + (sub === 'cc' ? HELP.ccOnly : ''));
    return 0;
  }
  const { flags, command } = parsed;
  if (sub === 'cc') {
    const patterns = [...flags.local, ...(process.env.REPR_CC_LOCAL ?? '').split(/\s+/).filter(Boolean)];
    if (localReason(command, patterns)) return runHere(command);
  }
  const env = process.env;
  const token = flags.token ?? env.REPR_TOKEN;
  const tls = {
    ...((flags.tls.caFile ?? env.REPR_TLS_CA) ? { caFile: flags.tls.caFile ?? env.REPR_TLS_CA } : {}),
    ...((flags.tls.certFile ?? env.REPR_TLS_CERT) ? { certFile: flags.tls.certFile ?? env.REPR_TLS_CERT } : {}),
    ...((flags.tls.keyFile ?? env.REPR_TLS_KEY) ? { keyFile: flags.tls.keyFile ?? env.REPR_TLS_KEY } : {}),
  };
  const key: DaemonKey = {
    server: flags.server ?? env.REPR_SERVER ?? 'grpc://127.0.0.1:8980',
    ...(flags.cas ? { cas: flags.cas } : {}),
    instance: flags.instance,
    ...(token ? { token } : {}),
    tls,
  };
  const socket = socketPath(key);
  const startArgs = [REPR_BIN, 'daemon', 'serve', '--server', key.server, '--instance', key.instance, '--socket', socket];
  if (key.cas) startArgs.push('--cas', key.cas);
  if (flags.idleTimeout) startArgs.push('--idle-timeout', flags.idleTimeout);
  if (tls.caFile) startArgs.push('--tls-ca', tls.caFile);
  if (tls.certFile) startArgs.push('--tls-cert', tls.certFile);
  if (tls.keyFile) startArgs.push('--tls-key', tls.keyFile);
  const roots = flags.roots.length > 0 ? flags.roots : (env.REPR_ROOTS ?? '').split(':').filter(Boolean);
  const req = {
    op: 'exec' as const,
    argv: command,
    cwd: process.cwd(),
    roots,
    env: commandEnv(flags.env, sub === 'cc' ? [...DEFAULT_ENV, ...COMPILER_ENV] : DEFAULT_ENV),
    platform: flags.platform,
    timeoutMs: flags.timeoutMs,
  };
  // The token goes by environment, not on a command line anyone can read in ps.
  const start = { command: process.execPath, args: startArgs, env: { ...env, ...(token ? { REPR_TOKEN: token } : {}) } };
  try {
    try {
      return await execThroughDaemon(await connectOrStart(socket, start), req, process.stdout, process.stderr);
    } catch (e) {
      // A daemon that hung up before reading the request ran nothing: one more try starts a fresh one.
      if (!(e instanceof DaemonHungUp)) throw e;
      return await execThroughDaemon(await connectOrStart(socket, start), req, process.stdout, process.stderr);
    }
  } catch (e) {
    process.stderr.write(`repr: ${(e as Error).message}\n`);
    return RUN_FAILED_EXIT;
  }
}

/**
 * Runs the compiler here, as if repr were not in between: same stdio, its
 * exit code, and a signal that kills it reported as a shell would. A Ctrl-C
 * reaches it directly (same process group), so repr only waits.
 */
function runHere(command: string[]): Promise<number> {
  return new Promise((resolve) => {
    const child = spawn(command[0]!, command.slice(1), { stdio: 'inherit' });
    const forward = (sig: NodeJS.Signals) => child.kill(sig);
    const ignore = () => undefined;
    process.on('SIGINT', ignore);
    process.on('SIGTERM', forward);
    const done = (code: number) => {
      process.off('SIGINT', ignore);
      process.off('SIGTERM', forward);
      resolve(code);
    };
    child.once('error', (e) => {
      process.stderr.write(`repr: cannot run ${command[0]}: ${e.message}\n`);
      done(127);
    });
    child.once('exit', (code, sig) => done(sig ? (signalExit(sig) ?? 128) : (code ?? RUN_FAILED_EXIT)));
  });
}
