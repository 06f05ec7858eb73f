import type { ServerConfig } from './config.js';
import type { Flag } from './flag.js';
import { invalidArgument } from '../common/errors.js';
import { isTlsTarget } from '../grpc/dial.js';
import { withTlsEnv } from './schema.js';
import { bottomDisk, remoteCasStore, withBottomDiskLimit } from './store-schema.js';
import type { WorkerConfig } from './worker-config.js';

// Flags the server and the worker share: one spelling, one meaning.
const common = {
  logLevel: { flags: '--log-level <level>', description: 'trace, debug, info, warn, error or silent', kind: 'string', path: 'logLevel' },
  logFormat: {
    flags: '--log-format <format>',
    description: 'json (JSON lines), pretty (one readable line per event) or auto (pretty on a terminal, else json)',
    kind: 'string',
    path: 'logFormat',
  },
  executorProperty: {
    flags: '--executor-property <name=value...>',
    description: 'platform properties the executors offer',
    kind: 'properties',
    path: 'execution.properties',
  },
  allowNetwork: {
    flags: '--allow-network',
    description: 'let actions ask for the host network with the platform property network=on',
    kind: 'switch',
    path: 'execution.allowNetwork',
    toConfig: () => true,
  },
  otlpEndpoint: {
    flags: '--otlp-endpoint <url>',
    description: 'send OpenTelemetry traces of calls and action phases to this OTLP/HTTP receiver (e.g. http://localhost:4318)',
    kind: 'string',
    path: 'tracing.otlpEndpoint',
    defaultText: 'off, or $OTEL_EXPORTER_OTLP_TRACES_ENDPOINT / $OTEL_EXPORTER_OTLP_ENDPOINT',
  },
} satisfies Record<string, Flag<never>>;

/**
 * The TLS flags of every client command (`repr worker`, `repr run`, `repr
 * status`), over the `tls` field of a client config; each falls back to an
 * environment variable (CLIENT_TLS_ENV).
 */
export const clientTlsFlags = {
  ca: {
    flags: '--tls-ca <file>',
    description: "CA certificates (PEM) a grpcs:// server's certificate must chain to",
    kind: 'string',
    path: 'tls.caFile',
    defaultText: "$REPR_TLS_CA, else Node's bundled roots",
  },
  cert: {
    flags: '--tls-cert <file>',
    description: 'client certificate (PEM) for grpcs:// servers that require one (with --tls-key)',
    kind: 'string',
    path: 'tls.certFile',
    defaultText: '$REPR_TLS_CERT',
  },
  key: {
    flags: '--tls-key <file>',
    description: 'private key (PEM) of the client certificate',
    kind: 'string',
    path: 'tls.keyFile',
    defaultText: '$REPR_TLS_KEY',
  },
} satisfies Record<string, Flag<never>>;

/** `repr server`'s flags, each over the field of the config file it overrides. */
export const serverFlags: readonly Flag<ServerConfig>[] = [
  { flags: '-l, --listen <host:port>', description: 'gRPC address to listen on (port 0 picks a free port)', kind: 'string', path: 'listen' },
  {
    flags: '-d, --data-dir <dir>',
    description: 'where blobs and the action cache live',
    kind: 'string',
    path: 'dataDir',
    defaultText: '$REPR_DATA_DIR or ~/.local/share/repr',
  },
  {
    flags: '--cas <url>',
    description:
      'keep the CAS on another REAPI server (grpc://HOST:PORT, or grpcs:// trusting $REPR_TLS_CA), e.g. a --cache-only one that several servers share; small blobs are cached in memory',
    kind: 'string',
    path: 'storage.cas',
    toConfig: (url: string) => {
      try {
        return remoteCasStore(url, isTlsTarget(url) ? withTlsEnv(undefined) : undefined);
      } catch (e) {
        throw invalidArgument(`--cas: ${(e as Error).message}`);
      }
    },
    defaultText: 'a disk store under --data-dir',
  },
  {
    flags: '--cas-size <size>',
    description: 'disk space for the CAS before LRU eviction, e.g. 50GiB (the disk store at the bottom of the CAS)',
    kind: 'size',
    applyCompiled: (c: ServerConfig, bytes: number) => {
      if (!bottomDisk(c.storage.cas))
        throw invalidArgument('--cas-size sizes the disk store at the bottom of the CAS, and this CAS has none (--cas or storage.cas keeps it elsewhere)');
      return { ...c, storage: { ...c.storage, cas: withBottomDiskLimit(c.storage.cas, bytes) } };
    },
    defaultOf: (c) => bottomDisk(c.storage.cas)?.limitBytes,
  },
  { flags: '--instance <name...>', description: 'instance names to serve', kind: 'list', path: 'instanceNames', defaultText: 'any' },
  common.logLevel,
  common.logFormat,
  {
    flags: '--executors <n>',
    description: 'actions run at once in this process (0 = a pure scheduler for `repr worker`s)',
    kind: 'int',
    path: 'execution.executors',
    defaultText: 'cores',
  },
  {
    flags: '--cache-only',
    description: 'serve only the cache (CAS, ByteStream, ActionCache): no Execution, no scheduler',
    kind: 'switch',
    path: 'execution.enabled',
    toConfig: () => false,
  },
  {
    flags: '--state <url>',
    description: 'where queue and operations live: sqlite (one scheduler) or postgres://USER@HOST:PORT/DB, shared by several schedulers',
    kind: 'string',
    path: 'state.url',
  },
  {
    flags: '--scheduler-expiry <seconds>',
    description: 'with shared state: a scheduler this late with its heartbeat is taken for dead and its actions run elsewhere',
    kind: 'positive',
    path: 'state.schedulerExpirySeconds',
  },
  {
    flags: '--advertise <host:port>',
    description: 'with shared state: the address other schedulers and repr status show for this one',
    kind: 'string',
    path: 'state.advertise',
    defaultText: 'the listening address',
  },
  {
    flags: '--worker-heartbeat-timeout <seconds>',
    description: 'drop a worker silent for this long and run its actions elsewhere',
    kind: 'positive',
    path: 'execution.workerHeartbeatTimeoutSeconds',
  },
  common.executorProperty,
  common.allowNetwork,
  {
    flags: '--metrics-listen <host:port>',
    description: 'serve Prometheus /metrics and /healthz over HTTP here (port 0 picks one)',
    kind: 'string',
    path: 'metricsListen',
  },
  common.otlpEndpoint,
  {
    flags: '--tls-cert <file>',
    description: 'serve TLS with this PEM certificate (chain), on the gRPC port and the metrics endpoint; reloaded when it changes',
    kind: 'string',
    path: 'tls.certFile',
  },
  { flags: '--tls-key <file>', description: "the certificate's PEM private key", kind: 'string', path: 'tls.keyFile' },
  {
    flags: '--tls-client-ca <file>',
    description: 'require every client to present a certificate signed by a CA in this PEM file (mTLS)',
    kind: 'string',
    path: 'tls.clientCaFile',
  },
  {
    flags: '--auth-tokens-file <file>',
    description: 'accept bearer tokens; FILE has lines name:token [role,role...]',
    kind: 'string',
    path: 'auth.tokensFile',
  },
  {
    flags: '--auth-jwks <file|url>',
    description: 'accept JSON Web Tokens signed by a key of this key set (a file, or an http(s):// URL); needs --auth-jwt-issuer and --auth-jwt-audience',
    kind: 'string',
    pathOf: (v: string) => (/^https?:\/\//.test(v) ? 'auth.jwt.jwksUrl' : 'auth.jwt.jwksFile'),
  },
  { flags: '--auth-jwt-issuer <iss>', description: 'the issuer (iss) a JSON Web Token must name', kind: 'string', path: 'auth.jwt.issuer' },
  { flags: '--auth-jwt-audience <aud>', description: 'the audience (aud) a JSON Web Token must name', kind: 'string', path: 'auth.jwt.audience' },
  {
    flags: '--auth-mtls',
    description: 'name callers by the CN of their verified client certificate (TLS must require client certificates)',
    kind: 'switch',
    path: 'auth.mtls.principalFrom',
    toConfig: () => 'cn',
  },
  {
    flags: '--auth-grant <name=role,...>',
    description: 'give principals whose name matches NAME (a glob) these roles, on every instance; repeatable',
    kind: 'grants',
    path: 'auth.principals',
    append: true,
  },
  {
    flags: '--auth-anonymous <roles|none>',
    description: 'what callers without credentials may do: roles, comma-separated, or none (default: admin without authenticators, else none)',
    kind: 'string',
    path: 'auth.anonymous',
    toConfig: (v: string) =>
      v === 'none'
        ? false
        : {
            name: 'anonymous',
            roles: v
              .split(',')
              .map((r) => r.trim())
              .filter(Boolean),
          },
  },
];

/** `repr worker`'s flags, each over the field of the config file it overrides. */
export const workerFlags: readonly Flag<WorkerConfig>[] = [
  {
    flags: '-s, --scheduler <url...>',
    description:
      'scheduler address, grpc://HOST:PORT or grpcs://HOST:PORT for TLS (required here or in the config file); several (repeated, or separated by commas) share one queue: the worker takes work from one and moves to the next when it is lost',
    kind: 'list',
    path: 'scheduler',
    required: true,
  },
  {
    flags: '--cas <url>',
    description: 'CAS to fetch inputs from and upload outputs to, if not the scheduler (grpc://HOST:PORT or grpcs://HOST:PORT)',
    kind: 'string',
    path: 'cas',
  },
  {
    flags: '--name <name>',
    description: 'worker name, unique per scheduler; names the data directory, so a restarted worker reuses its cache',
    kind: 'string',
    path: 'name',
    defaultText: 'the host name',
  },
  { flags: '--executors <n>', description: 'actions run at once', kind: 'int', path: 'execution.executors', defaultText: 'cores' },
  common.executorProperty,
  { flags: '--cpus <n>', description: 'cores an action may ask for at most', kind: 'positive', path: 'execution.cpus', defaultText: 'all' },
  { flags: '--memory <size>', description: 'memory an action may ask for at most', kind: 'size', path: 'execution.memoryBytes', defaultText: 'all' },
  common.allowNetwork,
  {
    flags: '-d, --data-dir <dir>',
    description: 'local CAS cache and scratch space',
    kind: 'string',
    path: 'dataDir',
    defaultText: '$REPR_DATA_DIR/workers/NAME',
  },
  { flags: '--cache-size <size>', description: 'local CAS cache size before LRU eviction', kind: 'size', path: 'cache.limitBytes' },
  {
    flags: '--stale-days <days>',
    description: "at start, remove other workers' directories under $REPR_DATA_DIR/workers unused for this many days (0: never)",
    kind: 'int',
    path: 'staleDays',
  },
  {
    flags: '--drain-timeout <seconds>',
    description: 'on SIGTERM, how long running actions may finish before they are handed back',
    kind: 'positive',
    path: 'drainTimeoutSeconds',
  },
  common.logLevel,
  common.logFormat,
  { flags: '--token <token>', description: 'bearer token for a scheduler that requires one', kind: 'string', path: 'token', defaultText: '$REPR_TOKEN' },
  clientTlsFlags.ca,
  clientTlsFlags.cert,
  clientTlsFlags.key,
  {
    flags: '--run-writes <mode>',
    description: '`repr run` writes go to an overlayfs layer on disk (overlay) or through FUSE (fuse)',
    kind: 'string',
    path: 'execution.runWrites',
  },
  {
    flags: '--max-input-nodes <n>',
    description: "files, directories and symlinks an action's input root may expand to",
    kind: 'int',
    path: 'execution.maxInputNodes',
  },
  { flags: '--max-input-bytes <size>', description: "bytes of files an action's input root may expand to", kind: 'size', path: 'execution.maxInputBytes' },
  common.otlpEndpoint,
];
