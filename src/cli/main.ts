import { Command, InvalidArgumentError } from 'commander';
import { createLogger } from '../common/logger.js';
import { ReprError } from '../common/errors.js';
import { compileServerConfig, loadConfigFile, parseByteSize, type ServerConfigInput } from '../config/config.js';
import { ReprServer } from '../server/server.js';

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
  .option('--executors <n>', 'actions run at once in this process (default: cores; 0 = cache only)', (v) => intOption(v, '--executors'))
  .option('--executor-property <name=value...>', 'platform properties the executors offer (default OSFamily=linux)')
  .option('--allow-network', 'let actions ask for the host network with the platform property network=on')
  .action(async (opts: ServerFlags) => {
    const input = (opts.config ? loadConfigFile(opts.config) : {}) as ServerConfigInput & Record<string, unknown>;
    if (opts.listen) input.listen = opts.listen;
    if (opts.dataDir) input.dataDir = opts.dataDir;
    if (opts.instance) input.instanceNames = opts.instance;
    if (opts.logLevel) input.logLevel = opts.logLevel as ServerConfigInput['logLevel'];
    const execution = (input.execution ?? {}) as NonNullable<ServerConfigInput['execution']>;
    if (opts.executors !== undefined) execution.executors = opts.executors;
    if (opts.executorProperty) execution.properties = parseProperties(opts.executorProperty);
    if (opts.allowNetwork) execution.allowNetwork = true;
    input.execution = execution;
    let config = compileServerConfig(input);
    if (opts.casSize !== undefined) config = withCasSize(config, opts.casSize);
    const log = createLogger(config.logLevel);
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
}

function intOption(v: string, flag: string): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0) throw new InvalidArgumentError(`${flag} takes a non-negative integer, not "${v}"`);
  return n;
}

function parseProperties(pairs: string[]): Record<string, string[]> {
  const out: Record<string, string[]> = {};
  for (const p of pairs) {
    const i = p.indexOf('=');
    if (i <= 0) throw new InvalidArgumentError(`--executor-property takes name=value, not "${p}"`);
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
