import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Code, codeOf } from '../../../src/common/errors.js';
import { compileServerConfig } from '../../../src/config/config.js';
import { applyCompiledFlags, type Flag, flagDefault, flagName, formatByteSize, overlayFlags, parseFlagValue } from '../../../src/config/flag.js';
import { serverFlags, workerFlags } from '../../../src/config/flags.js';
import { compileWorkerConfig } from '../../../src/config/worker-config.js';

/** A value of the right kind for each flag, as commander would hand it over after parsing. */
function sample<C>(flag: Flag<C>): unknown {
  const byName: Record<string, unknown> = {
    '--log-level': 'debug',
    '--log-format': 'pretty',
    '--run-writes': 'fuse',
    '--scheduler': ['grpc://sched:1', 'sched:2'],
    '--cas': 'cas:2',
    '--auth-tokens-file': '/etc/repr/tokens',
    '--tls-cert': '/etc/repr/cert.pem',
    '--tls-key': '/etc/repr/key.pem',
    '--auth-grant': [{ name: 'ci-*', roles: ['ci'] }],
    '--auth-anonymous': 'reader',
    '--auth-jwt-issuer': 'https://issuer.example',
    '--auth-jwt-audience': 'repr',
    '--otlp-endpoint': 'http://collector:4318',
    '--state': 'postgres://repr@db:5432/repr',
  };
  const name = flagName(flag);
  if (name in byName) return byName[name];
  switch (flag.kind) {
    case 'string':
      return `value of ${name}`;
    case 'list':
      return ['one', 'two'];
    case 'switch':
      return true;
    case 'int':
    case 'positive':
      return 7;
    case 'size':
      return 3 * 2 ** 30;
    case 'properties':
      return { pool: ['big'] };
    case 'grants':
      return [{ name: 'x', roles: ['reader'] }];
  }
}

/** What the config file must already say for a flag to make a valid config: a JWT flag alone is half a JWT setup. */
function baseFor(name: string): Record<string, unknown> {
  if (name.startsWith('--auth-jwt-')) return { auth: { jwt: { jwksFile: '/etc/repr/jwks.json', issuer: 'i', audience: 'a' } } };
  if (name === '--auth-anonymous') return { auth: { tokensFile: '/etc/repr/tokens' } };
  // Client-certificate principals need a server that asks for certificates.
  if (name === '--auth-mtls') return { tls: { certFile: '/c.pem', keyFile: '/k.pem', clientCaFile: '/ca.pem' } };
  return {};
}

function get(obj: unknown, dotted: string): unknown {
  return dotted.split('.').reduce<unknown>((o, k) => (o as Record<string, unknown> | undefined)?.[k], obj);
}

describe('config flags', () => {
  for (const [command, flags] of [
    ['server', serverFlags],
    ['worker', workerFlags],
  ] as const) {
    it(`${command}: each flag is spelled once and sets a field the schema knows`, () => {
      const names = flags.map((f) => flagName(f as Flag<unknown>));
      assert.equal(new Set(names).size, names.length, 'a flag declared twice');
      const compile = command === 'server' ? compileServerConfig : compileWorkerConfig;
      for (const flag of flags as readonly Flag<unknown>[]) {
        if (flag.path === undefined) continue;
        const value = sample(flag);
        // A TLS flag alone is incomplete (a certificate needs its key, a client's TLS a grpcs:// server): the rest comes from the file.
        const tls = flag.path.startsWith('tls.') ? { tls: { certFile: '/c.pem', keyFile: '/k.pem' } } : {};
        const base = command === 'server' ? tls : { scheduler: tls.tls ? 'grpcs://s:1' : 'grpc://s:1', ...tls };
        // Schemas are strict: a path that names no field fails to compile.
        const config = compile(overlayFlags({ ...base, ...baseFor(flagName(flag)) }, [flag], () => value));
        const expected = flag.toConfig ? flag.toConfig(value as never) : value;
        const got = get(config, flag.path);
        if (flag.path === 'cas') assert.match(String(got), /^grpcs?:\/\//, flagName(flag));
        else if (flag.path === 'scheduler') assert.deepEqual(got, ['grpc://sched:1', 'grpc://sched:2'], flagName(flag));
        else assert.deepEqual(got, expected, flagName(flag));
      }
    });
  }

  it('overrides the config file without changing it', () => {
    const file = { listen: '0.0.0.0:1', execution: { cpus: 3, executors: 2 } };
    const given: Record<string, unknown> = { '--executors': 0, '--cache-only': true, '--instance': ['a'] };
    const input = overlayFlags(file, serverFlags, (f) => given[flagName(f)]);
    assert.deepEqual(input, { listen: '0.0.0.0:1', instanceNames: ['a'], execution: { cpus: 3, executors: 0, enabled: false } });
    assert.deepEqual(file, { listen: '0.0.0.0:1', execution: { cpus: 3, executors: 2 } });
  });

  it('--auth-jwks sets the key set file or URL; --auth-grant adds to the grants of the config file', () => {
    const jwks = serverFlags.find((f) => flagName(f) === '--auth-jwks')!;
    const grant = serverFlags.find((f) => flagName(f) === '--auth-grant')!;
    const rest = { issuer: 'i', audience: 'a' };
    const withFile = compileServerConfig(overlayFlags({ auth: { jwt: rest } }, [jwks], () => '/etc/repr/jwks.json'));
    assert.equal(withFile.auth.jwt?.jwksFile, '/etc/repr/jwks.json');
    const withUrl = compileServerConfig(overlayFlags({ auth: { jwt: rest } }, [jwks], () => 'https://idp.example/jwks'));
    assert.equal(withUrl.auth.jwt?.jwksUrl, 'https://idp.example/jwks');
    assert.equal(withUrl.auth.jwt?.jwksFile, undefined);
    const g = parseFlagValue(grant, 'ci-*=ci,reader', parseFlagValue(grant, 'bob=admin', undefined));
    const file = { auth: { principals: [{ name: 'alice', roles: ['developer'] }] } };
    const c = compileServerConfig(overlayFlags(file, [grant], () => g));
    assert.deepEqual(c.auth.principals, [
      { name: 'alice', roles: ['developer'] },
      { name: 'bob', roles: ['admin'] },
      { name: 'ci-*', roles: ['ci', 'reader'] },
    ]);
    assert.throws(() => parseFlagValue(grant, 'bob', undefined), /--auth-grant takes name=role/);
    assert.throws(() => compileServerConfig(overlayFlags({}, [grant], () => [{ name: 'x', roles: ['wizard'] }])), /unknown role "wizard"/);
    const anon = serverFlags.find((f) => flagName(f) === '--auth-anonymous')!;
    assert.equal(compileServerConfig(overlayFlags({ auth: { tokensFile: '/t' } }, [anon], () => 'none')).auth.anonymous, false);
  });

  it('--cas-size resizes the disk store at the bottom of the CAS, under the verifying node', () => {
    const casSize = serverFlags.find((f) => flagName(f) === '--cas-size')!;
    const c = applyCompiledFlags(compileServerConfig({ dataDir: '/d' }), serverFlags, (f) => (f === casSize ? 50 * 2 ** 30 : undefined));
    assert.equal(c.storage.cas.type, 'verifying');
    const rc = c.storage.cas.type === 'verifying' ? c.storage.cas.backend : undefined;
    assert.equal(rc?.type === 'read-caching' && rc.slow.type === 'disk' && rc.slow.limitBytes, 50 * 2 ** 30);
    assert.equal(
      flagDefault(casSize, () => compileServerConfig({})),
      '10GiB',
    );
  });

  it('--cas keeps the CAS on another server, small blobs cached in memory in front of it, and still verified', () => {
    const cas = serverFlags.find((f) => flagName(f) === '--cas')!;
    const c = compileServerConfig(overlayFlags({ dataDir: '/d' }, [cas], () => 'cas-node:8980'));
    assert.deepEqual(c.storage.cas, {
      type: 'verifying',
      backend: {
        type: 'read-caching',
        maxBlobBytes: 2 ** 20,
        findMissing: 'slow',
        fast: { type: 'memory', limitBytes: 64 * 2 ** 20 },
        slow: { type: 'remote', target: 'grpc://cas-node:8980', instanceName: '' },
      },
    });
    assert.equal(c.storage.ac.type, 'read-caching', 'the action cache stays local unless configured');
    const previous = process.env.REPR_TLS_CA;
    process.env.REPR_TLS_CA = '/etc/repr/ca.pem';
    try {
      const tls = compileServerConfig(overlayFlags({}, [cas], () => 'grpcs://cas-node:443')).storage.cas;
      assert.match(JSON.stringify(tls), /"target":"grpcs:\/\/cas-node:443","instanceName":"","tls":\{"caFile":"\/etc\/repr\/ca.pem"\}/);
    } finally {
      if (previous === undefined) delete process.env.REPR_TLS_CA;
      else process.env.REPR_TLS_CA = previous;
    }
    assert.throws(
      () => overlayFlags({}, [cas], () => 'https://cas-node'),
      (e: unknown) => codeOf(e) === Code.INVALID_ARGUMENT && /^--cas: "https:\/\/cas-node": unsupported scheme https:\/\//.test((e as Error).message),
    );
    const casSize = serverFlags.find((f) => flagName(f) === '--cas-size')!;
    assert.throws(() => applyCompiledFlags(c, [casSize], () => 2 ** 30), /--cas-size sizes the disk store .* this CAS has none/);
  });

  it("shows the schema's defaults in help, and none for flags that have none of their own", () => {
    const serverDefaults = () => compileServerConfig({});
    const workerDefaults = () => compileWorkerConfig({ scheduler: 'grpc://s:1' });
    const shown = <C>(flags: readonly Flag<C>[], defaults: () => C) => Object.fromEntries(flags.map((f) => [flagName(f), flagDefault(f, defaults)]));
    const server = shown(serverFlags, serverDefaults);
    assert.equal(server['--listen'], '127.0.0.1:8980');
    assert.equal(server['--worker-heartbeat-timeout'], '10');
    assert.equal(server['--executor-property'], 'OSFamily=linux');
    assert.equal(server['--cache-only'], undefined);
    assert.equal(server['--auth-tokens-file'], undefined);
    const worker = shown(workerFlags, workerDefaults);
    assert.equal(worker['--scheduler'], undefined);
    assert.equal(worker['--cache-size'], '10GiB');
    assert.equal(worker['--drain-timeout'], '60');
    assert.equal(worker['--max-input-bytes'], '64GiB');
    assert.equal(worker['--run-writes'], 'overlay');
    assert.equal(formatByteSize(1536), '1536B');
  });

  it('refuses bad values naming the flag, and collects repeated properties', () => {
    const flag = (name: string) => [...serverFlags, ...workerFlags].find((f) => flagName(f as Flag<unknown>) === name) as Flag<unknown>;
    const refused = (name: string, text: string, pattern: RegExp) =>
      assert.throws(
        () => parseFlagValue(flag(name), text, undefined),
        (e: unknown) => codeOf(e) === Code.INVALID_ARGUMENT && pattern.test((e as Error).message),
      );
    refused('--executors', '-1', /--executors takes a non-negative integer/);
    refused('--cpus', '0', /--cpus takes a positive number/);
    refused('--memory', '2gx', /--memory: "2gx" is not a size/);
    refused('--executor-property', 'pool', /--executor-property takes name=value/);
    const props = flag('--executor-property');
    const two = parseFlagValue(props, 'pool=b', parseFlagValue(props, 'pool=a', undefined));
    assert.deepEqual(parseFlagValue(props, 'os=linux', two), { pool: ['a', 'b'], os: ['linux'] });
    assert.equal(parseFlagValue(flag('--memory'), '512MiB', undefined), 512 * 2 ** 20);
  });
});
