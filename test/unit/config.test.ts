import assert from 'node:assert/strict';
import { it } from 'node:test';
import path from 'node:path';
import { compileServerConfig, loadConfigFile } from '../../src/config/config.js';
import { postgresAcStore } from '../../src/storage/store-config.js';
import { parseByteSize } from '../../src/common/units.js';
import { REPO_ROOT } from '../../support/servers.js';
import { sandboxSettings, unmet } from '../../src/executor/platform.js';

it('parses sizes one way everywhere: binary with i or a bare letter, decimal with B', () => {
  const cases: [string, number | undefined][] = [
    ['1048576', 1048576],
    ['512MiB', 512 * 2 ** 20],
    ['512Mi', 512 * 2 ** 20],
    ['512MB', 512e6],
    ['2g', 2 * 2 ** 30],
    ['1.5k', 1536],
    ['10GiB', 10 * 2 ** 30],
    ['1TB', 1e12],
    ['3B', 3],
    ['5i', undefined],
    ['2gx', undefined],
    ['', undefined],
  ];
  for (const [s, want] of cases) assert.equal(parseByteSize(s), want, s);
  // The platform property `memory` follows the same rule.
  assert.equal(sandboxSettings([{ name: 'memory', value: '2g' }]).limits.memoryBytes, 2 * 2 ** 30);
  assert.deepEqual(unmet([{ name: 'memory', value: '3g' }], { properties: {}, cpus: 1, memoryBytes: 2 * 2 ** 30, networkAllowed: false }).length, 1);
});

it('accepts the example config, which shows every field', () => {
  const c = compileServerConfig(loadConfigFile(path.join(REPO_ROOT, 'examples', 'server.json')));
  assert.equal(c.execution.workerHeartbeatTimeoutSeconds, 10);
  assert.equal(c.execution.memoryBytes, 8 * 2 ** 30);
  assert.equal(c.storage.cas.type, 'verifying');
  assert.equal(c.storage.cas.type === 'verifying' && c.storage.cas.backend.type, 'read-caching');
  assert.equal(c.tls?.clientCaFile, '/etc/repr/tls/clients-ca.pem');
});

it('verifies the CAS whether or not its tree says so, and never the action cache', () => {
  const disk = { type: 'disk', directory: '/tmp/repr-cas' } as const;
  const given = compileServerConfig({ storage: { cas: disk } }).storage.cas;
  assert.deepEqual(given, { type: 'verifying', backend: { ...disk, limitBytes: 10 * 2 ** 30, fsync: false } });
  const explicit = compileServerConfig({ storage: { cas: { type: 'verifying', backend: disk } } }).storage.cas;
  assert.deepEqual(explicit, given, 'not wrapped twice');
  const defaults = compileServerConfig({ dataDir: '/d' }).storage;
  assert.equal(defaults.cas.type, 'verifying');
  assert.ok(!JSON.stringify(defaults.ac).includes('verifying'));
  assert.throws(() => compileServerConfig({ storage: { ac: { type: 'verifying', backend: disk } } }), /storage\.ac: .*verifying store would refuse every one/);
});

it('refuses store targets other than grpc://, grpcs:// or host:port, naming the field', () => {
  const cas = (target: string, tls?: object) => compileServerConfig({ storage: { cas: { type: 'remote', target, ...(tls ? { tls } : {}) } } }).storage.cas;
  assert.deepEqual(cas('cas:8980'), { type: 'verifying', backend: { type: 'remote', target: 'grpc://cas:8980', instanceName: '' } });
  assert.throws(() => cas('https://cas:443'), /storage\.cas\.target: .*unsupported scheme https/);
  assert.deepEqual(cas('grpcs://cas:443', { caFile: '/etc/repr/ca.pem' }), {
    type: 'verifying',
    backend: { type: 'remote', target: 'grpcs://cas:443', instanceName: '', tls: { caFile: '/etc/repr/ca.pem' } },
  });
  assert.throws(() => cas('grpc://cas:80', { caFile: '/ca.pem' }), /storage\.cas\.tls: TLS settings for grpc:\/\/cas:80, which is plaintext; use grpcs:\/\//);
  assert.throws(() => cas('grpcs://cas:443', { certFile: '/c.pem' }), /storage\.cas\.tls: a client certificate needs both certFile and keyFile/);
});

it('takes a server certificate, its key and optionally a client CA, and nothing half-given', () => {
  const c = compileServerConfig({ tls: { certFile: '/etc/repr/server.pem', keyFile: '/etc/repr/server.key' } });
  assert.deepEqual(c.tls, { certFile: '/etc/repr/server.pem', keyFile: '/etc/repr/server.key', reloadIntervalSeconds: 10, metricsRequireClientCert: false });
  assert.equal(compileServerConfig({}).tls, undefined, 'plaintext unless asked');
  assert.throws(() => compileServerConfig({ tls: { certFile: '/c.pem' } }), /tls\.keyFile: missing; .*--tls-key/);
  assert.throws(() => compileServerConfig({ tls: { keyFile: '/k.pem' } }), /tls\.certFile: missing; .*--tls-cert/);
  assert.throws(() => compileServerConfig({ tls: { certFile: '/c', keyFile: '/k', reloadIntervalSeconds: 0 } }), /tls\.reloadIntervalSeconds/);
  assert.throws(() => compileServerConfig({ tls: { certFile: '/c', keyFile: '/k', clientCA: '/ca' } }), /tls: Unrecognized key/);
  assert.throws(() => compileServerConfig({ tls: { certFile: '/c', keyFile: '/k', metricsRequireClientCert: true } }), /needs tls\.clientCaFile/);
});

it('refuses a remote store for the action cache, saying why', () => {
  assert.throws(() => compileServerConfig({ storage: { ac: { type: 'remote', target: 'grpc://x:1' } } }), /action-cache entries are not content-addressed/);
});

it('takes a postgres store for the action cache, checking its URL and table without repeating a password', () => {
  const ac = (store: object) => compileServerConfig({ storage: { ac: { type: 'postgres', ...store } } }).storage.ac;
  assert.deepEqual(ac({ url: 'postgres://repr@db:5432/repr' }), postgresAcStore('postgres://repr@db:5432/repr'));
  assert.deepEqual(ac({ url: 'postgresql://db/repr', table: 'ac_v2' }), { type: 'postgres', url: 'postgresql://db/repr', table: 'ac_v2' });
  assert.throws(
    () => ac({ url: 'mysql://repr:hunter2@db/repr' }),
    (e: Error) =>
      /storage\.ac\.url: mysql:\/\/repr:\*\*\*@db\/repr is not a postgres:\/\/ or postgresql:\/\/ URL/.test(e.message) && !e.message.includes('hunter2'),
  );
  assert.throws(
    () => ac({ url: 'hunter2' }),
    (e: Error) => /storage\.ac\.url: is not a URL/.test(e.message) && !e.message.includes('hunter2'),
  );
  assert.throws(() => ac({ url: 'postgres://db/repr', table: 'Results; DROP' }), /storage\.ac\.table: must be a plain lower-case identifier/);
});

it('keeps the action cache in the shared database when the state is there, unless storage.ac says otherwise', () => {
  const url = 'postgres://repr@db:5432/repr';
  assert.deepEqual(compileServerConfig({ state: { url } }).storage.ac, postgresAcStore(url));
  assert.equal(compileServerConfig({ dataDir: '/d' }).storage.ac.type, 'read-caching', 'one scheduler on SQLite keeps it on disk');
  const memory = { type: 'memory', limitBytes: 2 ** 20 };
  assert.deepEqual(compileServerConfig({ state: { url }, storage: { ac: memory } }).storage.ac, memory);
});

it('refuses a postgres store for the CAS, saying what to use instead', () => {
  const postgres = { type: 'postgres', url: 'postgres://db/repr' };
  assert.throws(() => compileServerConfig({ storage: { cas: postgres } }), /storage\.cas: a postgres store .* use disk, or remote \(--cas\)/);
  assert.throws(
    () => compileServerConfig({ storage: { cas: { type: 'read-caching', fast: { type: 'memory' }, slow: postgres } } }),
    /storage\.cas: a postgres store/,
  );
});
