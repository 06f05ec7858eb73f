// The layers of src/, lowest first: a folder may import its own files and
// those of folders below it, never above. `npm run check:layers` (run by CI)
// fails on any import that runs back up, and on any import cycle.
const LAYERS = [
  'proto', // generated code only
  'common', // errors, digests, clock, logger
  'grpc', // grpc-js plumbing: handlers and status mapping, dial, auth, http2 windows
  'reapi', // the REAPI client, hand-written codecs, resource names, precondition details
  'storage', // BlobStore, backends, decorators, action-cache keys
  'sandbox', // the Sandbox seam, bubblewrap, cgroups, seccomp
  'vfs', // the FUSE view of a client's files and the overlay over it
  'executor', // what a scheduler needs from any executor: slots, tasks, run hosts, platform matching
  'worker', // the action and run executors, input staging, outputs, `repr worker`
  'scheduler', // queue, dispatch, operations and their store
  'autoscale', // load prediction, the scaling decision, worker providers
  'observability', // telemetry sinks, metrics endpoint, scheduler gauges
  'services', // thin gRPC adapters
  'client', // `repr run` client side, execution and status clients, discovery
  'config', // validated schemas with defaults
  'server', // wiring only
  'cli', // the `repr` command
];

const above = (i) => LAYERS.slice(i + 1).join('|');

module.exports = {
  forbidden: [
    ...LAYERS.slice(0, -1).map((layer, i) => ({
      name: `${layer}-imports-higher`,
      comment: `src/${layer}/ is below ${LAYERS.slice(i + 1).join(', ')}: it must not import them`,
      severity: 'error',
      from: { path: `^src/${layer}/` },
      to: { path: `^src/(${above(i)})/` },
    })),
    {
      // The order above would let the scheduler use the worker; it must not:
      // both meet only at the executor contracts, so that a worker can be
      // built and tested without a scheduler and the other way round.
      name: 'scheduler-imports-worker',
      comment: 'the scheduler knows executors only through src/executor/',
      severity: 'error',
      from: { path: '^src/scheduler/' },
      to: { path: '^src/worker/' },
    },
    {
      name: 'no-circular',
      comment: 'files must not import each other in a loop',
      severity: 'error',
      from: { path: '^src/' },
      to: { circular: true },
    },
    {
      name: 'src-imports-harness',
      comment: 'production code must not depend on tests, benchmarks or the test harness',
      severity: 'error',
      from: { path: '^src/' },
      to: { path: '^(test|bench|support)/' },
    },
    {
      name: 'unknown-folder',
      comment: 'every folder of src/ has a place in the layers (add a new one to LAYERS)',
      severity: 'error',
      from: { path: '^src/', pathNot: `^src/(${LAYERS.join('|')})/` },
      to: {},
    },
  ],
  options: {
    doNotFollow: { path: 'node_modules' },
    tsPreCompilationDeps: true,
    tsConfig: { fileName: 'tsconfig.json' },
    // Type-only imports count too: they tie the folders together as much as values do.
    exclude: { path: '^(dist|node_modules)/' },
  },
};
