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
  .description('run the server: REAPI CAS, ByteStream, ActionCache and Capabilities on one gRPC port')
  .option('-c, --config <file>', 'JSON config file (see examples/server.json); flags override it')
  .option('-l, --listen <host:port>', 'gRPC address to listen on (default 127.0.0.1:8980; port 0 picks a free port)')
  .option('-d, --data-dir <dir>', 'where blobs and the action cache live (default $REPR_DATA_DIR or ~/.local/share/repr)')
  .option('--cas-size <size>', 'disk space for the CAS before LRU eviction, e.g. 50GiB (default 10GiB)', byteSizeOption)
  .option('--instance <name...>', 'instance names to serve (default: any)')
  .option('--log-level <level>', 'trace, debug, info, warn, error or silent (default info)')
  .action(async (opts: { config?: string; listen?: string; dataDir?: string; casSize?: number; instance?: string[]; logLevel?: string }) => {
    const input = (opts.config ? loadConfigFile(opts.config) : {}) as ServerConfigInput & Record<string, unknown>;
    if (opts.listen) input.listen = opts.listen;
    if (opts.dataDir) input.dataDir = opts.dataDir;
    if (opts.instance) input.instanceNames = opts.instance;
    if (opts.logLevel) input.logLevel = opts.logLevel as ServerConfigInput['logLevel'];
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
