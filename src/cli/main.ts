import { Command, InvalidArgumentError } from 'commander';
import { failedPrecondition, ReprError } from '../common/errors.js';
import { compileServerConfig, defaultDataDir, loadConfigFile, type ServerConfigInput } from '../config/config.js';
import { parseByteSize } from '../common/units.js';
import os from 'node:os';
import path from 'node:path';
import type { Sandbox } from '../sandbox/sandbox.js';
import { readFile } from 'node:fs/promises';

// Each command imports what it needs when it runs: `repr run` is started
// once per command a user runs, and loading the server and worker with it
// would add a fifth of a second to every one.

function byteSizeOption(v: string): number {
  const n = parseByteSize(v);
  if (n === undefined) throw new InvalidArgumentError(`"${v}" is not a size (e.g. 512MiB, 10GiB)`);
  return n;
}

const program = new Command()
  .name('repr')
  .description('repr ("reaper"): remote execution and caching for build tools, speaking the Bazel Remote Execution API v2')
  .showHelpAfterError();

program
  .command('server')
  .description('run the server: REAPI CAS, ByteStream, ActionCache, Capabilities, Execution and Operations on one gRPC port, with sandboxed executors')
  .option('-c, --config <file>', 'JSON config file (see examples/server.json); flags override it')
  .option('-l, --listen <host:port>', 'gRPC address to listen on (default 127.0.0.1:8980; port 0 picks a free port)')
  .option('-d, --data-dir <dir>', 'where blobs and the action cache live (default $REPR_DATA_DIR or ~/.local/share/repr)')
  .option('--cas-size <size>', 'disk space for the CAS before LRU eviction, e.g. 50GiB (default 10GiB)', byteSizeOption)
  .option('--instance <name...>', 'instance names to serve (default: any)')
  .option('--log-level <level>', 'trace, debug, info, warn, error or silent (default info)')
  .option('--executors <n>', 'actions run at once in this process (default: cores; 0 = a pure scheduler for `repr worker`s)', (v) => intOption(v, '--executors'))
  .option('--cache-only', 'serve only the cache (CAS, ByteStream, ActionCache): no Execution, no scheduler')
  .option('--worker-heartbeat-timeout <seconds>', 'drop a worker silent for this long and run its actions elsewhere (default 10)', (v) => positiveNumber(v, '--worker-heartbeat-timeout'))
  .option('--executor-property <name=value...>', 'platform properties the executors offer (default OSFamily=linux)')
  .option('--allow-network', 'let actions ask for the host network with the platform property network=on')
  .option('--metrics-listen <host:port>', 'serve Prometheus /metrics and /healthz over HTTP here (port 0 picks one)')
  .option('--auth-tokens-file <file>', 'require a bearer token on every call; FILE has lines name:token (see PLUGINS.md)')
  .action(async (opts: ServerFlags) => {
    const input = (opts.config ? loadConfigFile(opts.config) : {}) as ServerConfigInput & Record<string, unknown>;
    if (opts.listen) input.listen = opts.listen;
    if (opts.dataDir) input.dataDir = opts.dataDir;
    if (opts.instance) input.instanceNames = opts.instance;
    if (opts.logLevel) input.logLevel = opts.logLevel as ServerConfigInput['logLevel'];
    if (opts.metricsListen) input.metricsListen = opts.metricsListen;
    if (opts.authTokensFile) input.auth = { type: 'token', tokensFile: opts.authTokensFile };
    const execution = (input.execution ?? {}) as NonNullable<ServerConfigInput['execution']>;
    if (opts.executors !== undefined) execution.executors = opts.executors;
    if (opts.executorProperty) execution.properties = parseProperties(opts.executorProperty);
    if (opts.allowNetwork) execution.allowNetwork = true;
    if (opts.cacheOnly) execution.enabled = false;
    if (opts.workerHeartbeatTimeout !== undefined) execution.workerHeartbeatTimeoutSeconds = opts.workerHeartbeatTimeout;
    input.execution = execution;
    let config = compileServerConfig(input);
    if (opts.casSize !== undefined) config = withCasSize(config, opts.casSize);
    const { createLogger } = await import('../common/logger.js');
    const log = createLogger(config.logLevel);
    const { ReprServer } = await import('../server/server.js');
    const server = await ReprServer.start(config, log);
    const stop = (signal: string) => {
      log.info({ signal }, 'shutting down');
      server.stop().then(
        () => process.exit(0),
        () => process.exit(1),
      );
    };
    process.once('SIGINT', () => stop('SIGINT'));
    process.once('SIGTERM', () => stop('SIGTERM'));
  });

interface ServerFlags {
  config?: string;
  listen?: string;
  dataDir?: string;
  casSize?: number;
  instance?: string[];
  logLevel?: string;
  executors?: number;
  executorProperty?: string[];
  allowNetwork?: boolean;
  cacheOnly?: boolean;
  workerHeartbeatTimeout?: number;
  metricsListen?: string;
  authTokensFile?: string;
}

program
  .command('worker')
  .description('run a worker: connects to a scheduler (repr server), takes actions matching its platform properties and runs them sandboxed')
  .requiredOption('-s, --scheduler <url>', 'scheduler address, grpc://HOST:PORT')
  .option('--cas <url>', 'CAS to fetch inputs from and upload outputs to, if not the scheduler (grpc://HOST:PORT)')
  .option('--name <name>', 'worker name, unique per scheduler (default HOSTNAME-PID)')
  .option('--executors <n>', 'actions run at once (default: cores)', (v) => intOption(v, '--executors'))
  .option('--executor-property <name=value...>', 'platform properties offered (default OSFamily=linux)')
  .option('--cpus <n>', 'cores an action may ask for at most (default: all)', (v) => positiveNumber(v, '--cpus'))
  .option('--memory <size>', 'memory an action may ask for at most (default: all)', byteSizeOption)
  .option('--allow-network', 'let actions ask for the host network with the platform property network=on')
  .option('-d, --data-dir <dir>', 'local CAS cache and scratch space (default $REPR_DATA_DIR/workers/NAME)')
  .option('--cache-size <size>', 'local CAS cache size before LRU eviction (default 10GiB)', byteSizeOption)
  .option('--drain-timeout <seconds>', 'on SIGTERM, how long running actions may finish before they are handed back (default 60)', (v) => positiveNumber(v, '--drain-timeout'))
  .option('--log-level <level>', 'trace, debug, info, warn, error or silent (default info)')
  .option('--token <token>', 'bearer token for a scheduler that requires one (default $REPR_TOKEN)')
  .option('--run-writes <mode>', '`repr run` writes go to an overlayfs layer on disk (overlay, default) or through FUSE (fuse)', (v) => {
    if (v !== 'overlay' && v !== 'fuse') throw new InvalidArgumentError('--run-writes takes overlay or fuse');
    return v;
  })
  .option('--max-input-nodes <n>', 'files, directories and symlinks an action\'s input root may expand to (default 1000000)', (v) => intOption(v, '--max-input-nodes'))
  .option('--max-input-bytes <size>', 'bytes of files an action\'s input root may expand to (default 64GiB)', byteSizeOption)
  .action(async (opts: WorkerFlags) => {
    const { createLogger } = await import('../common/logger.js');
    const log = createLogger((opts.logLevel ?? 'info') as Parameters<typeof createLogger>[0]);
    const name = opts.name ?? `${os.hostname()}-${process.pid}`;
    const dataDir = opts.dataDir ?? path.join(defaultDataDir(), 'workers', name.replace(/[^\w.-]/g, '_'));
    const { BwrapSandbox } = await import('../sandbox/bwrap-sandbox.js');
    const { Worker } = await import('../worker/worker.js');
    const { DEFAULT_INPUT_LIMITS } = await import('../worker/input-root.js');
    let sandbox: Sandbox;
    try {
      sandbox = new BwrapSandbox({});
    } catch (e) {
      throw failedPrecondition(`cannot run actions without a sandbox: ${(e as Error).message}`);
    }
    const worker = await Worker.start({
      scheduler: opts.scheduler,
      ...(opts.cas ? { cas: opts.cas } : {}),
      name,
      executors: opts.executors ?? os.cpus().length,
      properties: opts.executorProperty ? parseProperties(opts.executorProperty) : { OSFamily: ['linux'] },
      cpus: opts.cpus ?? os.cpus().length,
      memoryBytes: opts.memory ?? os.totalmem(),
      allowNetwork: opts.allowNetwork ?? false,
      cacheDir: path.join(dataDir, 'cas'),
      cacheBytes: opts.cacheSize ?? 10 * 1024 ** 3,
      workDir: path.join(dataDir, 'work'),
      sandbox,
      defaultTimeoutMs: 900_000,
      maxTimeoutMs: 3_600_000,
      inputLimits: { ...DEFAULT_INPUT_LIMITS, ...(opts.maxInputNodes ? { maxNodes: opts.maxInputNodes } : {}), ...(opts.maxInputBytes ? { maxBytes: opts.maxInputBytes } : {}) },
      log: log.child({ worker: name }),
      ...(opts.token || process.env.REPR_TOKEN ? { token: opts.token ?? process.env.REPR_TOKEN } : {}),
      ...(opts.runWrites ? { runWrites: opts.runWrites } : {}),
    });
    const stop = (signal: string) => {
      log.info({ signal, running: worker.busy }, 'draining: no new work; finishing running actions');
      worker.drain((opts.drainTimeout ?? 60) * 1000).then(
        () => {
          log.info('worker stopped');
          process.exit(0);
        },
        () => process.exit(1),
      );
    };
    process.once('SIGINT', () => stop('SIGINT'));
    process.once('SIGTERM', () => stop('SIGTERM'));
  });

interface WorkerFlags {
  scheduler: string;
  cas?: string;
  name?: string;
  executors?: number;
  executorProperty?: string[];
  cpus?: number;
  memory?: number;
  allowNetwork?: boolean;
  dataDir?: string;
  cacheSize?: number;
  drainTimeout?: number;
  logLevel?: string;
  token?: string;
  runWrites?: 'overlay' | 'fuse';
  maxInputNodes?: number;
  maxInputBytes?: number;
}

program
  .command('run')
  .description("run a command on a repr server or worker; it sees this directory's files (fetched on demand through FUSE), its output streams back, and the files it writes come back here")
  .usage('[options] -- COMMAND [ARGS...]')
  .argument('[command...]', 'the command and its arguments (after --)')
  .option('-s, --server <spec>', 'where to run: grpc://HOST:PORT[,grpc://...], file:PATH (one server per line) or dns-srv:NAME (default $REPR_SERVER or grpc://127.0.0.1:8980)')
  .option('--cas <url>', 'CAS to put files in, if not the server (grpc://HOST:PORT)')
  .option('-r, --root <dir...>', 'directories shown to the command (default: the current directory)')
  .option('-e, --env <NAME[=VALUE]...>', 'environment variables to pass (NAME alone passes this shell\'s value); PATH, LANG, LC_ALL, TZ and TERM pass by default')
  .option('-p, --platform <name=value...>', 'platform properties the executor must offer (pool=big, cpu=2, memory=1g, network=on ...)')
  .option('--timeout <seconds>', 'kill the command after this long (default: the server\'s)', (v) => positiveNumber(v, '--timeout'))
  .option('--batch <file>', 'run every line of FILE as a shell command (- for stdin), fanned out over the executors')
  .option('-w, --workers <n>', 'commands run at once, each on its own executor (default 4)', (v) => intOption(v, '--workers'))
  .option('--manifest <file>', 'paths (one per line, relative to the working directory) to send as mappings before the command asks')
  .option('--no-record', 'do not record the files a command touches, nor send them as mappings next time')
  .option('--stats', 'print what each run cost: files asked on demand vs served from mappings, bytes, time blocked on this client, costliest files')
  .option('--stats-json <file>', 'write the same as JSON')
  .option('--instance <name>', 'REAPI instance name', '')
  .option('--token <token>', 'bearer token for servers that require one (default $REPR_TOKEN)')
  .action(async (command: string[], opts: RunFlags) => {
    const { readBatch, runCommands } = await import('../client/run-command.js');
    const { discoveryFromSpec } = await import('../client/discovery.js');
    const { bearerInterceptor } = await import('../grpc/auth.js');
    const commands = opts.batch ? await readBatch(opts.batch) : command.length > 0 ? [command] : [];
    if (commands.length === 0) throw new InvalidArgumentError('nothing to run: give a command after --, or --batch FILE');
    const token = opts.token ?? process.env.REPR_TOKEN;
    const env = new Map<string, string>();
    for (const name of ['PATH', 'LANG', 'LC_ALL', 'TZ', 'TERM']) if (process.env[name] !== undefined) env.set(name, process.env[name]!);
    for (const e of opts.env ?? []) {
      const i = e.indexOf('=');
      if (i < 0) env.set(e, process.env[e] ?? '');
      else env.set(e.slice(0, i), e.slice(i + 1));
    }
    const manifest = opts.manifest ? (await readFile(opts.manifest, 'utf8')).split('\n').map((l) => l.trim()).filter(Boolean) : undefined;
    const { exitCode } = await runCommands({
      discovery: discoveryFromSpec(opts.server ?? process.env.REPR_SERVER ?? 'grpc://127.0.0.1:8980'),
      ...(opts.cas ? { cas: opts.cas } : {}),
      instanceName: opts.instance,
      commands,
      parallel: opts.workers ?? 4,
      cwd: process.cwd(),
      roots: opts.root ?? [],
      env: [...env].map(([name, value]) => ({ name, value })),
      platform: Object.entries(parseProperties(opts.platform ?? [], '--platform')).flatMap(([name, vs]) => vs.map((value) => ({ name, value }))),
      timeoutMs: (opts.timeout ?? 0) * 1000,
      ...(manifest ? { manifest } : {}),
      record: opts.record,
      stats: opts.stats ?? false,
      ...(opts.statsJson ? { statsJson: opts.statsJson } : {}),
      ...(token ? { interceptors: [bearerInterceptor(token)] } : {}),
      stdout: process.stdout,
      stderr: process.stderr,
    });
    process.exitCode = exitCode;
  });

interface RunFlags {
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

program
  .command('status')
  .description("show a scheduler's workers, their executors and properties, running actions and queue depth")
  .option('-s, --server <url>', 'scheduler address, grpc://HOST:PORT', 'grpc://127.0.0.1:8980')
  .option('--json', 'print the raw status as JSON')
  .option('--token <token>', 'bearer token for a scheduler that requires one (default $REPR_TOKEN)')
  .action(async (opts: { server: string; json?: boolean; token?: string }) => {
    const { fetchStatus, formatStatus } = await import('../client/status-client.js');
    const status = await fetchStatus(opts.server, 10_000, opts.token ?? process.env.REPR_TOKEN);
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

function parseProperties(pairs: string[], flag = '--executor-property'): Record<string, string[]> {
  const out: Record<string, string[]> = {};
  for (const p of pairs) {
    const i = p.indexOf('=');
    if (i <= 0) throw new InvalidArgumentError(`${flag} takes name=value, not "${p}"`);
    (out[p.slice(0, i)] ??= []).push(p.slice(i + 1));
  }
  return out;
}

/** --cas-size sets the limit of the disk store at the bottom of the CAS stack. */
function withCasSize(config: ReturnType<typeof compileServerConfig>, size: number) {
  const resize = (s: (typeof config)['storage']['cas']): typeof s => {
    if (s.type === 'disk') return { ...s, limitBytes: size };
    if (s.type === 'read-caching') return { ...s, slow: resize(s.slow) };
    return s;
  };
  return { ...config, storage: { ...config.storage, cas: resize(config.storage.cas) } };
}

program.parseAsync(process.argv).catch((e: unknown) => {
  const msg = e instanceof ReprError ? e.message : e instanceof Error ? (e.stack ?? e.message) : String(e);
  process.stderr.write(`repr: ${msg}\n`);
  process.exit(e instanceof ReprError && e.code === 3 ? 2 : 1);
});
