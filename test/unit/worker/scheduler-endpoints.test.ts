import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { endpointTls, resolveSchedulers, systemResolveHost } from '../../../src/worker/scheduler-endpoints.js';

/** A resolver that knows only these names; any other fails as an unknown name does. */
const hosts = (table: Record<string, string[]>) => {
  const asked: string[] = [];
  const resolve = async (host: string) => {
    asked.push(host);
    const addresses = table[host];
    if (!addresses) throw Object.assign(new Error(`getaddrinfo ENOTFOUND ${host}`), { code: 'ENOTFOUND' });
    return addresses;
  };
  return { resolve, asked };
};

describe('resolveSchedulers', () => {
  it('makes a name with several addresses several schedulers, each checked by TLS against the name', async () => {
    const { resolve } = hosts({ farm: ['10.0.0.1', 'fd00::2', '10.0.0.1'] });
    assert.deepEqual(await resolveSchedulers(['grpcs://farm:8980'], resolve), [
      { target: 'grpcs://10.0.0.1:8980', label: 'grpcs://farm:8980 (10.0.0.1)', serverName: 'farm' },
      { target: 'grpcs://[fd00::2]:8980', label: 'grpcs://farm:8980 (fd00::2)', serverName: 'farm' },
    ]);
  });

  it('dials a name with one address, or none right now, as it is, and addresses without asking', async () => {
    const { resolve, asked } = hosts({ one: ['10.0.0.9'] });
    assert.deepEqual(await resolveSchedulers(['grpc://one:1', 'grpc://gone:2', 'grpc://127.0.0.1:3', 'grpc://[::1]:4'], resolve), [
      { target: 'grpc://one:1', label: 'grpc://one:1' },
      { target: 'grpc://gone:2', label: 'grpc://gone:2' },
      { target: 'grpc://127.0.0.1:3', label: 'grpc://127.0.0.1:3' },
      { target: 'grpc://[::1]:4', label: 'grpc://[::1]:4' },
    ]);
    assert.deepEqual(asked, ['one', 'gone'], 'addresses are not looked up');
  });

  it('keeps the order given and tries an address named twice once', async () => {
    const { resolve } = hosts({ farm: ['10.0.0.1', '10.0.0.2'] });
    const targets = (await resolveSchedulers(['grpc://10.0.0.2:1', 'grpc://farm:1', 'grpc://b:2'], resolve)).map((e) => e.target);
    assert.deepEqual(targets, ['grpc://10.0.0.2:1', 'grpc://10.0.0.1:1', 'grpc://b:2']);
  });

  it('sees a scheduler added to DNS at the next resolution', async () => {
    const table: Record<string, string[]> = { farm: ['10.0.0.1', '10.0.0.2'] };
    const { resolve } = hosts(table);
    assert.equal((await resolveSchedulers(['grpc://farm:1'], resolve)).length, 2);
    table.farm!.push('10.0.0.3');
    assert.deepEqual(
      (await resolveSchedulers(['grpc://farm:1'], resolve)).map((e) => e.target),
      ['grpc://10.0.0.1:1', 'grpc://10.0.0.2:1', 'grpc://10.0.0.3:1'],
    );
  });

  it("asks the system's resolver, which knows localhost", async () => {
    const addresses = await systemResolveHost('localhost');
    assert.ok(addresses.length >= 1 && addresses.every((a) => a === '127.0.0.1' || a === '::1'), String(addresses));
    const endpoints = await resolveSchedulers(['grpc://localhost:8980']);
    // One address: the name itself is dialled; several: one scheduler each.
    if (addresses.length === 1) assert.deepEqual(endpoints, [{ target: 'grpc://localhost:8980', label: 'grpc://localhost:8980' }]);
    else assert.equal(endpoints.length, new Set(addresses).size);
  });
});

describe('endpointTls', () => {
  it("checks an address a name resolved to against the name, unless the settings name the certificate's own", () => {
    assert.deepEqual(endpointTls('grpcs://10.0.0.1:1', { caFile: '/ca.pem' }, 'farm'), { tls: { caFile: '/ca.pem', serverName: 'farm' } });
    assert.deepEqual(endpointTls('grpcs://10.0.0.1:1', undefined, 'farm'), { tls: { serverName: 'farm' } });
    assert.deepEqual(endpointTls('grpcs://10.0.0.1:1', { serverName: 'sched.internal' }, 'farm'), { tls: { serverName: 'sched.internal' } });
    assert.deepEqual(endpointTls('grpcs://farm:1', { caFile: '/ca.pem' }), { tls: { caFile: '/ca.pem' } });
    assert.deepEqual(endpointTls('grpcs://farm:1', undefined), {});
    assert.deepEqual(endpointTls('grpc://10.0.0.1:1', { caFile: '/ca.pem' }, 'farm'), {}, 'plaintext takes no TLS settings');
  });
});
