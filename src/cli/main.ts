import { logVerbosity, setLogVerbosity } from '@grpc/grpc-js';
import { Command, CommanderError, Help, InvalidArgumentError, Option } from 'commander';
import { Code, failedPrecondition, invalidArgument, ReprError } from '../common/errors.js';
import { FAILED_EXIT, RUN_FAILED_EXIT, USAGE_EXIT } from '../client/exit-codes.js';
import { compileServerConfig, loadConfigFile } from '../config/config.js';
import { addProperty, applyCompiledFlags, type Flag, flagDefault, overlayFlags, parseFlagValue } from '../config/flag.js';
import { clientTlsFlags, serverFlags, workerFlags } from '../config/flags.js';
import { withTlsEnv } from '../config/schema.js';
import { compileWorkerConfig } from '../config/worker-config.js';
import type { Sandbox } from '../sandbox/sandbox.js';
import { readFile } from 'node:fs/promises';
import { readFileSync } from 'node:fs';

// Each command imports what it needs when it runs: `repr run` is started
// once per command a user runs, and loading the server and worker with it
// would add a fifth of a second to every one.

/** Help's "(default …)" for each config flag, worked out only when help is shown. */
const helpDefaults = new WeakMap<Option, () => string | undefined>();

/** The version in package.json, from dist/src/cli/ (read on start: a few microseconds). */
function version(): string {
  try {
    return (JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as { version?: string }).version ?? 'unknown';
  } catch {
    return 'unknown';
  }
}

// grpc-js's own error log would print a second, rawer line next to repr's
// one (a failed bind, a failed resolution); GRPC_VERBOSITY still turns it on.
if (process.env.GRPC_VERBOSITY === undefined && process.env.GRPC_NODE_VERBOSITY === undefined) setLogVerbosity(logVerbosity.NONE);

/** The subcommand being run, which decides the exit code of a failure (`repr run` keeps 1 and 2 for the command). */
let subcommand: string | undefined;

const program = new Command()
  .name('repr')
  .version(version(), '-V, --version', 'print the version and exit')
  .description('repr ("reaper"): remote execution and caching for build tools, speaking the Bazel Remote Execution API v2')
  .hook('preSubcommand', (_program, sub) => {
    subcommand = sub.name();
  })
  // Before the subcommands: they inherit these. A usage error is one line
  // saying where the options are listed, and exits through the same path as
  // every other failure.
  .exitOverride()
  .configureOutput({
    outputError: (text, write) => {
      const what = text
        .replace(/^error: /, '')
        .replace(/\s+/g, ' ')
        .trim()
        .replace(/\.$/, '');
      write(`repr: ${what}; see repr${subcommand ? ` ${subcommand}` : ''} --help\n`);
    },
  })
  .configureHelp({
    optionDescription(option: Option): string {
      const base = Help.prototype.optionDescription.call(this as Help, option);
      const shown = helpDefaults.get(option)?.();
      return shown === undefined ? base : `${base} (default ${shown})`;
    },
  });

type Opts = Record<string, unknown>;

// grpc-js sends the host it dials as the TLS server name, an IP address
// included, which Node answers with a deprecation warning (DEP0123) on
// stderr. To someone dialling grpcs://10.0.0.5:8980 that is noise about a
// library's choice, in the middle of the one line a failure prints; only
// that warning is dropped.
const printWarning = process.listeners('warning');
process.removeAllListeners('warning');
process.on('warning', (w: Error & { code?: string }) => {
  if (w.code !== 'DEP0123') for (const l of printWarning) l(w);
});

const DEFAULT_SERVER_HELP = 'default $REPR_SERVER, else grpc://127.0.0.1:8980';

/** Where a client command finds its server: --server, else $REPR_SERVER, else the default `repr server` listens on. */
function serverSpec(flag: string | undefined): string {
  return flag ?? process.env.REPR_SERVER ?? 'grpc://127.0.0.1:8980';
}

interface TlsFlags {
  tlsCa?: string;
  tlsCert?: string;
  tlsKey?: string;
}

/** A client TLS flag of `repr run` and `repr status`, spelled and described as `repr worker`'s (flags.ts). */
function tlsOption(flag: Flag<never>): Option {
  const option = new Option(flag.flags, flag.description);
  helpDefaults.set(option, () => flag.defaultText);
  return option;
}

/**
 * --tls-* over $REPR_TLS_*. `given` is whether a flag was: settings from
 * flags that no channel would use are refused, while the environment's are
 * defaults for whichever channels are grpcs://.
 */
function clientTls(opts: TlsFlags) {
  const flags = {
    ...(opts.tlsCa ? { caFile: opts.tlsCa } : {}),
    ...(opts.tlsCert ? { certFile: opts.tlsCert } : {}),
    ...(opts.tlsKey ? { keyFile: opts.tlsKey } : {}),
  };
  return { tls: withTlsEnv(flags), given: Object.keys(flags).length > 0 };
}

/**
 * Declares a table of config flags on a command; returns how to read one
 * flag's value from what commander parsed (undefined when not given).
 */
function addConfigFlags<C>(command: Command, flags: readonly Flag<C>[], defaults: () => C): (opts: Opts) => (flag: Flag<C>) => unknown {
  const options = new Map<Flag<C>, Option>();
  for (const flag of flags) {
    const option = new Option(flag.flags, flag.description);
    if (flag.kind !== 'switch') {
      option.argParser((text: string, previous: unknown) => {
        try {
          return parseFlagValue(flag, text, previous);
        } catch (e) {
          throw new InvalidArgumentError((e as Error).message);
        }
      });
    }
    helpDefaults.set(option, () => flagDefault(flag, defaults));
    command.addOption(option);
    options.set(flag, option);
  }
  return (opts) => (flag) => opts[options.get(flag)!.attributeName()];
}

const serverCommand = program
  .command('server')
  .description('run the server: REAPI CAS, ByteStream, ActionCache, Capabilities, Execution and Operations on one gRPC port, with sandboxed executors')
  .option('-c, --config <file>', 'JSON config file (see examples/server.json); flags override it');
const serverFlag = addConfigFlags(serverCommand, serverFlags, () => compileServerConfig({}));
serverCommand.action(async (opts: Opts) => {
  const flag = serverFlag(opts);
  const input = overlayFlags(typeof opts.config === 'string' ? loadConfigFile(opts.config) : {}, serverFlags, flag);
  const config = applyCompiledFlags(compileServerConfig(input), serverFlags, flag);
  const { createLoggerFor } = await import('../common/logger.js');
  const log = await createLoggerFor(config.logLevel, config.logFormat);
  const { ReprServer } = await import('../server/server.js');
  // Installed before starting: a signal that arrives while the server starts
  // (or just as it says it listens) stops it cleanly instead of killing it.
  let server: Awaited<ReturnType<typeof ReprServer.start>> | undefined;
  let stopping: string | undefined;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = signal;
    if (!server) return; // stopped as soon as start returns
    log.info({ signal }, 'shutting down');
    server.stop().then(
      () => process.exit(0),
      () => process.exit(1),
    );
  };
  process.once('SIGINT', () => stop('SIGINT'));
  process.once('SIGTERM', () => stop('SIGTERM'));
  server = await ReprServer.start(config, log);
  if (stopping) {
    const signal = stopping;
    stopping = undefined;
    stop(signal);
  }
});

const workerCommand = program
  .command('worker')
  .description('run a worker: connects to a scheduler (repr server), takes actions matching its platform properties and runs them sandboxed')
  .option('-c, --config <file>', 'JSON config file (see examples/worker.json); flags override it');
// Help needs some scheduler to work the defaults out; the address plays no part in them.
const workerFlag = addConfigFlags(workerCommand, workerFlags, () => compileWorkerConfig({ scheduler: 'grpc://localhost:8980' }));
workerCommand.action(async (opts: Opts) => {
  const input = overlayFlags(typeof opts.config === 'string' ? loadConfigFile(opts.config) : {}, workerFlags, workerFlag(opts));
  const config = compileWorkerConfig(input);
  const ex = config.execution;
  const { createLoggerFor } = await import('../common/logger.js');
  const log = await createLoggerFor(config.logLevel, config.logFormat);
  const { BwrapSandbox } = await import('../sandbox/bwrap-sandbox.js');
  const { Worker } = await import('../worker/worker.js');
  const tracing = config.tracing && (await (await import('../observability/tracing.js')).startTracing(config.tracing, log));
  let sandbox: Sandbox;
  try {
    sandbox = new BwrapSandbox({ ...ex.sandbox, ...(ex.readOnlyPaths ? { readOnlyPaths: ex.readOnlyPaths } : {}) });
  } catch (e) {
    throw failedPrecondition(`cannot run actions without a sandbox: ${(e as Error).message}`);
  }
  const worker = await Worker.start({
    schedulers: config.scheduler,
    ...(config.cas ? { cas: config.cas } : {}),
    name: config.name,
    executors: ex.executors,
    properties: ex.properties,
    cpus: ex.cpus,
    memoryBytes: ex.memoryBytes,
    allowNetwork: ex.allowNetwork,
    cacheDir: config.cache.directory,
    cacheBytes: config.cache.limitBytes,
    workDir: config.workDir,
    dataDir: config.dataDir,
    ...(config.workersDir && config.staleDays > 0 ? { staleSweep: { parent: config.workersDir, maxAgeMs: config.staleDays * 24 * 3600 * 1000 } } : {}),
    sandbox,
    defaultTimeoutMs: ex.defaultTimeoutSeconds * 1000,
    maxTimeoutMs: ex.maxTimeoutSeconds * 1000,
    inputLimits: { maxNodes: ex.maxInputNodes, maxBytes: ex.maxInputBytes, maxDepth: ex.maxInputDepth },
    log: log.child({ worker: config.name }),
    ...(config.token ? { token: config.token } : {}),
    ...(config.tls ? { tls: config.tls } : {}),
    runWrites: ex.runWrites,
    onFatal: (e) => {
      process.stderr.write(`repr: ${e.message}\n`);
      process.exit(1);
    },
  });
  const stop = (signal: string) => {
    log.info({ signal, running: worker.busy }, 'draining: no new work; finishing running actions');
    worker.drain(config.drainTimeoutSeconds * 1000).then(
      async () => {
        // The spans of the actions it finished go out before the process does.
        await tracing?.shutdown();
        log.info('worker stopped');
        process.exit(0);
      },
      () => process.exit(1),
    );
  };
  process.once('SIGINT', () => stop('SIGINT'));
  process.once('SIGTERM', () => stop('SIGTERM'));
});

program
  .command('run')
  .description(
    "run a command on a repr server or worker; it sees this directory's files (fetched on demand through FUSE), its output streams back, and the files it writes come back here",
  )
  .usage('[options] -- COMMAND [ARGS...]')
  .argument('[command...]', 'the command and its arguments (after --)')
  .option(
    '-s, --server <spec>',
    `where to run: grpc://HOST:PORT[,grpc://...] (grpcs:// for TLS), file:PATH (one server per line) or dns-srv:NAME (dns-srv:grpcs://NAME for TLS) (${DEFAULT_SERVER_HELP})`,
  )
  .option('--cas <url>', 'CAS to put files in, if not the server (grpc://HOST:PORT or grpcs://HOST:PORT)')
  .option('-r, --root <dir...>', 'directories shown to the command (default: the current directory)')
  .option(
    '-e, --env <NAME[=VALUE]...>',
    "environment variables to pass (NAME alone passes this shell's value); PATH, LANG, LC_ALL, TZ and TERM pass by default",
  )
  .option('-p, --platform <name=value...>', 'platform properties the executor must offer (pool=big, cpu=2, memory=1g, network=on ...)')
  .option('--timeout <seconds>', "kill the command after this long (default: the server's)", (v) => positiveNumber(v, '--timeout'))
  .option('--batch <file>', 'run every line of FILE as a shell command (- for stdin), fanned out over the executors')
  .option('-w, --workers <n>', 'commands run at once, each on its own executor (default 4)', (v) => intOption(v, '--workers'))
  .option('--manifest <file>', 'paths (one per line, relative to the working directory) to send as mappings before the command asks')
  .option('--no-record', 'do not record the files a command touches, nor send them as mappings next time')
  .option('--stats', 'print what each run cost: files asked on demand vs served from mappings, bytes, time blocked on this client, costliest files')
  .option('--stats-json <file>', 'write the same as JSON')
  .option('--instance <name>', 'REAPI instance name', '')
  .option('--token <token>', 'bearer token for servers that require one (default $REPR_TOKEN)')
  .addOption(tlsOption(clientTlsFlags.ca))
  .addOption(tlsOption(clientTlsFlags.cert))
  .addOption(tlsOption(clientTlsFlags.key))
  .action(async (command: string[], opts: RunFlags) => {
    const { readBatch, runCommands } = await import('../client/run-command.js');
    const { discoveryFromSpec, StaticDiscovery } = await import('../client/discovery.js');
    const { isTlsTarget } = await import('../grpc/dial.js');
    const commands = opts.batch ? await readBatch(opts.batch) : command.length > 0 ? [command] : [];
    if (commands.length === 0) throw invalidArgument('nothing to run: give a command after --, or --batch FILE');
    const token = opts.token ?? process.env.REPR_TOKEN;
    const discovery = discoveryFromSpec(serverSpec(opts.server));
    const { tls, given } = clientTls(opts);
    // Servers from a file or DNS are only known later, and may change; a fixed list is checked now.
    if (given && discovery instanceof StaticDiscovery && ![...(await discovery.servers()), opts.cas ?? ''].some(isTlsTarget)) {
      throw invalidArgument('--tls-ca, --tls-cert and --tls-key are for grpcs:// servers; use grpcs://HOST:PORT');
    }
    const { commandEnv } = await import('../client/command-env.js');
    const manifest = opts.manifest
      ? (await readFile(opts.manifest, 'utf8'))
          .split('\n')
          .map((l) => l.trim())
          .filter(Boolean)
      : undefined;
    const { exitCode } = await runCommands({
      discovery,
      ...(opts.cas ? { cas: opts.cas } : {}),
      instanceName: opts.instance,
      commands,
      parallel: opts.workers ?? 4,
      cwd: process.cwd(),
      roots: opts.root ?? [],
      env: commandEnv(opts.env ?? []),
      platform: Object.entries((opts.platform ?? []).reduce((into, pair) => addProperty(into, pair, '--platform'), {} as Record<string, string[]>)).flatMap(
        ([name, vs]) => vs.map((value) => ({ name, value })),
      ),
      timeoutMs: (opts.timeout ?? 0) * 1000,
      ...(manifest ? { manifest } : {}),
      record: opts.record,
      stats: opts.stats ?? false,
      ...(opts.statsJson ? { statsJson: opts.statsJson } : {}),
      token,
      ...(tls ? { tls } : {}),
      stdout: process.stdout,
      stderr: process.stderr,
    });
    process.exitCode = exitCode;
  });

interface RunFlags extends TlsFlags {
  server?: string;
  cas?: string;
  root?: string[];
  env?: string[];
  platform?: string[];
  timeout?: number;
  batch?: string;
  workers?: number;
  manifest?: string;
  record: boolean;
  stats?: boolean;
  statsJson?: string;
  instance: string;
  token?: string;
}

for (const sub of ['exec', 'cc'] as const) {
  // bin/repr.js runs these without loading this file; listed here for repr --help.
  program
    .command(sub)
    .description(
      sub === 'exec'
        ? "run one command remotely through this user's repr daemon (started on demand), as repr run does; see repr exec --help"
        : 'compiler wrapper (make CC="repr cc gcc"): compiles run remotely through the repr daemon, links and excluded commands here; see repr cc --help',
    )
    .helpOption(false)
    .allowUnknownOption()
    .allowExcessArguments()
    .argument('[args...]')
    .action(async (args: string[]) => {
      const { execMain } = await import('./exec-main.js');
      process.exitCode = await execMain(sub, args);
    });
}

interface DaemonFlags extends TlsFlags {
  server?: string;
  cas?: string;
  instance: string;
  token?: string;
  socket?: string;
  idleTimeout?: number;
  json?: boolean;
}

/** The daemon these flags name: the socket `repr exec` with the same flags would use. */
async function daemonSocket(opts: DaemonFlags): Promise<{ spec: string; socket: string; token?: string; tls?: ReturnType<typeof clientTls>['tls'] }> {
  const { socketPath } = await import('../client/daemon-protocol.js');
  const spec = serverSpec(opts.server);
  const token = opts.token ?? process.env.REPR_TOKEN;
  const { tls } = clientTls(opts);
  const socket =
    opts.socket ??
    socketPath({ server: spec, ...(opts.cas ? { cas: opts.cas } : {}), instance: opts.instance, ...(token ? { token } : {}), ...(tls ? { tls } : {}) });
  return { spec, socket, ...(token ? { token } : {}), ...(tls ? { tls } : {}) };
}

const daemonCommand = program
  .command('daemon')
  .description('the resident client behind repr exec and repr cc: one per user and server spec, started on demand, stopping when idle');
for (const sub of ['serve', 'start', 'status', 'stop'] as const) {
  const c = daemonCommand
    .command(sub)
    .description(
      {
        serve: 'run the daemon in the foreground (what repr exec starts, detached)',
        start: 'start the daemon in the background unless it runs; print its socket',
        status: "print the daemon's runs, questions asked, uploads and runs per executor",
        stop: 'stop the daemon: runs in flight are cancelled and write nothing back',
      }[sub],
    )
    .option('-s, --server <spec>', `the daemon's servers, as repr run's --server (${DEFAULT_SERVER_HELP})`)
    .option('--cas <url>', 'CAS to put files in, if not the server')
    .option('--instance <name>', 'REAPI instance name', '')
    .option('--token <token>', 'bearer token for servers that require one (default $REPR_TOKEN)')
    .option('--socket <path>', 'the Unix socket (default: a name made from the flags above, in $XDG_RUNTIME_DIR/repr or /tmp/repr-UID)')
    .addOption(tlsOption(clientTlsFlags.ca))
    .addOption(tlsOption(clientTlsFlags.cert))
    .addOption(tlsOption(clientTlsFlags.key));
  if (sub === 'serve' || sub === 'start')
    c.option('--idle-timeout <seconds>', 'stop after this long with no client (default 600)', (v) => positiveNumber(v, '--idle-timeout'));
  if (sub === 'status') c.option('--json', 'print the status as JSON');
  c.action(async (opts: DaemonFlags) => {
    const { spec, socket, token, tls } = await daemonSocket(opts);
    if (sub === 'serve') {
      const { RunDaemon } = await import('../client/daemon.js');
      const { discoveryFromSpec } = await import('../client/discovery.js');
      const log = (msg: string) => process.stderr.write(`${new Date().toISOString()} repr daemon ${process.pid}: ${msg}\n`);
      const daemon = new RunDaemon({
        socket,
        discovery: discoveryFromSpec(spec),
        ...(opts.cas ? { cas: opts.cas } : {}),
        instanceName: opts.instance,
        ...(token ? { token } : {}),
        ...(tls ? { tls } : {}),
        idleTimeoutMs: (opts.idleTimeout ?? 600) * 1000,
        log,
      });
      if (!(await daemon.listen())) {
        log(`another daemon serves ${socket}`);
        return;
      }
      log(`serving ${spec} on ${socket}`);
      process.once('SIGINT', () => void daemon.stop());
      process.once('SIGTERM', () => void daemon.stop());
      await daemon.stopped;
      process.exit(0);
    }
    const { connectOrStart, request } = await import('../client/daemon-client.js');
    const net = await import('node:net');
    if (sub === 'start') {
      const args = [process.argv[1]!, 'daemon', 'serve', '--server', spec, '--instance', opts.instance, '--socket', socket];
      if (opts.cas) args.push('--cas', opts.cas);
      if (opts.idleTimeout) args.push('--idle-timeout', String(opts.idleTimeout));
      for (const [flag, file] of [
        ['--tls-ca', opts.tlsCa],
        ['--tls-cert', opts.tlsCert],
        ['--tls-key', opts.tlsKey],
      ] as const)
        if (file) args.push(flag, file);
      const c = await connectOrStart(socket, { command: process.execPath, args, env: { ...process.env, ...(token ? { REPR_TOKEN: token } : {}) } });
      c.destroy();
      process.stdout.write(`${socket}\n`);
      return;
    }
    const c = await new Promise<import('node:net').Socket | undefined>((resolve) => {
      const s = net.connect(socket);
      s.once('connect', () => resolve(s));
      s.once('error', () => resolve(undefined));
    });
    if (!c) {
      if (sub === 'status') throw failedPrecondition(`no repr daemon serves ${spec} (socket ${socket}); repr exec, repr cc or repr daemon start starts one`);
      process.stdout.write(`no repr daemon serves ${spec}\n`);
      return;
    }
    const { formatDaemonStatus } = await import('../client/daemon-status.js');
    await request(c, { op: sub }, (r) => {
      if ('status' in r) {
        process.stdout.write(opts.json ? `${JSON.stringify(r.status, null, 2)}\n` : formatDaemonStatus(r.status, spec, socket));
      } else if ('stopped' in r) process.stdout.write(`stopped the repr daemon for ${spec}\n`);
    });
  });
}

program
  .command('status')
  .description("show a scheduler's workers, their executors and properties, running actions and queue depth")
  .option('-s, --server <spec>', `the scheduler: as repr run's --server; the first of a list (${DEFAULT_SERVER_HELP})`)
  .option('--json', 'print the raw status as JSON')
  .option('--token <token>', 'bearer token for a scheduler that requires one (default $REPR_TOKEN)')
  .addOption(tlsOption(clientTlsFlags.ca))
  .addOption(tlsOption(clientTlsFlags.cert))
  .addOption(tlsOption(clientTlsFlags.key))
  .action(async (opts: { server?: string; json?: boolean; token?: string } & TlsFlags) => {
    const { fetchStatus, formatStatus } = await import('../client/status-client.js');
    const { discoveryFromSpec } = await import('../client/discovery.js');
    const { isTlsTarget } = await import('../grpc/dial.js');
    const [server] = await discoveryFromSpec(serverSpec(opts.server)).servers();
    const { tls, given } = clientTls(opts);
    const token = opts.token ?? process.env.REPR_TOKEN;
    // Flags go to dial even for a grpc:// server, which refuses them saying to use grpcs://.
    const status = await fetchStatus(server!, 10_000, { token, ...(tls && (given || isTlsTarget(server!)) ? { tls } : {}) });
    process.stdout.write(opts.json ? `${JSON.stringify(status, null, 2)}\n` : formatStatus(status));
  });

function positiveNumber(v: string, flag: string): number {
  const n = Number(v);
  if (!(n > 0)) throw new InvalidArgumentError(`${flag} takes a positive number, not "${v}"`);
  return n;
}

function intOption(v: string, flag: string): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0) throw new InvalidArgumentError(`${flag} takes a non-negative integer, not "${v}"`);
  return n;
}

program.parseAsync(process.argv).catch((e: unknown) => {
  if (e instanceof CommanderError) {
    // Help and --version end here too, with exit code 0; usage errors were printed by outputError.
    process.exit(e.exitCode === 0 ? 0 : subcommand === 'run' ? RUN_FAILED_EXIT : USAGE_EXIT);
  }
  process.stderr.write(`repr: ${oneLine(e)}\n`);
  const usage = e instanceof ReprError && e.code === Code.INVALID_ARGUMENT;
  process.exit(subcommand === 'run' ? RUN_FAILED_EXIT : usage ? USAGE_EXIT : FAILED_EXIT);
});

/**
 * What a failure says to the user. repr's own errors and the system's
 * (ENOENT, EACCES: a path given on the command line) are complete in their
 * message; anything else is a bug in repr, whose stack is what a report needs.
 */
function oneLine(e: unknown): string {
  if (e instanceof ReprError) return e.message;
  if (e instanceof Error) return typeof (e as NodeJS.ErrnoException).syscall === 'string' ? e.message : (e.stack ?? e.message);
  return String(e);
}
