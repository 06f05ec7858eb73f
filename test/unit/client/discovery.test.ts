import assert from 'node:assert/strict';
import { rename, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { describe, it } from 'node:test';
import { Code, codeOf } from '../../../src/common/errors.js';
import {
  createDiscovery,
  DnsSrvDiscovery,
  discoveryFromSpec,
  discoverySchema,
  FileDiscovery,
  normalizeTarget,
  StaticDiscovery,
} from '../../../src/client/discovery.js';
import { tmpDir } from '../../../support/tmp.js';

const hasCode = (code: Code) => (e: unknown) => codeOf(e) === code;

describe('StaticDiscovery', () => {
  it('normalizes host:port to grpc://host:port and keeps grpcs://', async () => {
    const d = new StaticDiscovery(['grpc://a.example.com:8980', '10.0.0.1:1', '[::1]:8980', ' localhost:65535 ', 'grpcs://tls.example.com:0443']);
    assert.deepEqual(await d.servers(), [
      'grpc://a.example.com:8980',
      'grpc://10.0.0.1:1',
      'grpc://[::1]:8980',
      'grpc://localhost:65535',
      'grpcs://tls.example.com:443',
    ]);
  });

  it('refuses what is not an address, naming it', () => {
    for (const bad of ['', 'host', 'host:', ':80', 'host:0', 'host:65536', 'host:http', 'grpcs://host', 'http://host:80', 'a b:1', '::1:80']) {
      assert.equal(normalizeTarget(bad), undefined, bad);
    }
    assert.throws(() => new StaticDiscovery(['ok:1', 'nope']), /"nope" is not a server address/);
    assert.throws(() => new StaticDiscovery(['nope']), hasCode(Code.INVALID_ARGUMENT));
    assert.throws(() => new StaticDiscovery([]), /empty/);
  });
});

describe('FileDiscovery', () => {
  it('reads one target per line, skipping comments and blanks, and re-reads the file on every call', async () => {
    const file = path.join(tmpDir(), 'servers');
    await writeFile(file, '# the pool\n\ngrpc://a:1\n  b:2   # spare\r\n');
    const d = new FileDiscovery(file);
    assert.deepEqual(await d.servers(), ['grpc://a:1', 'grpc://b:2']);

    await writeFile(file, 'c:3\n');
    assert.deepEqual(await d.servers(), ['grpc://c:3']);

    // Tools that replace the file by rename, as editors and config managers do.
    const next = `${file}.new`;
    await writeFile(next, 'd:4\ne:5\n');
    await rename(next, file);
    assert.deepEqual(await d.servers(), ['grpc://d:4', 'grpc://e:5']);
  });

  it('is UNAVAILABLE, with the path, when the file is missing or lists nothing', async () => {
    const dir = tmpDir();
    const missing = path.join(dir, 'nothing-here');
    await assert.rejects(new FileDiscovery(missing).servers(), (e: unknown) => codeOf(e) === Code.UNAVAILABLE && (e as Error).message.includes(missing));
    const empty = path.join(dir, 'empty');
    await writeFile(empty, '# nobody yet\n');
    await assert.rejects(new FileDiscovery(empty).servers(), (e: unknown) => codeOf(e) === Code.UNAVAILABLE && /names no servers/.test((e as Error).message));
  });

  it('points at the line of a bad entry', async () => {
    const file = path.join(tmpDir(), 'servers');
    await writeFile(file, 'a:1\nnot an address\n');
    await assert.rejects(new FileDiscovery(file).servers(), (e: unknown) => (e as Error).message.includes(`${file}:2: "not an address"`));
  });
});

describe('DnsSrvDiscovery', () => {
  it('orders records by priority, then by weight, highest first', async () => {
    const d = new DnsSrvDiscovery('_repr._tcp.example.com', {
      resolveSrv: async () => [
        { name: 'c.example.com', port: 3, priority: 20, weight: 100 },
        { name: 'a.example.com.', port: 1, priority: 10, weight: 5 },
        { name: 'b.example.com', port: 2, priority: 10, weight: 50 },
      ],
    });
    assert.deepEqual(await d.servers(), ['grpc://b.example.com:2', 'grpc://a.example.com:1', 'grpc://c.example.com:3']);
  });

  it('names the servers grpcs:// when told they speak TLS, as records cannot say', async () => {
    const d = new DnsSrvDiscovery('_repr._tcp.example.com', {
      tls: true,
      resolveSrv: async () => [{ name: 'a.example.com.', port: 1, priority: 1, weight: 1 }],
    });
    assert.deepEqual(await d.servers(), ['grpcs://a.example.com:1']);
  });

  it('is UNAVAILABLE when there are no records', async () => {
    await assert.rejects(new DnsSrvDiscovery('x', { resolveSrv: async () => [] }).servers(), hasCode(Code.UNAVAILABLE));
  });

  it('fails fast with UNAVAILABLE for a name that cannot exist, online or not', async () => {
    // .invalid is reserved (RFC 6761): no resolver answers it with records.
    const name = '_repr._tcp.no-such-host.invalid';
    const started = Date.now();
    await assert.rejects(
      new DnsSrvDiscovery(name, { timeoutMs: 500 }).servers(),
      (e: unknown) => codeOf(e) === Code.UNAVAILABLE && (e as Error).message.includes(name),
    );
    assert.ok(Date.now() - started < 3000, `took ${Date.now() - started} ms`);
  });
});

describe('discovery config and --server spec', () => {
  it('parses specs into the right discovery', async () => {
    assert.ok(discoveryFromSpec('file:/etc/repr/servers') instanceof FileDiscovery);
    assert.equal((discoveryFromSpec('file:/etc/repr/servers') as FileDiscovery).path, '/etc/repr/servers');
    const dns = discoveryFromSpec('dns-srv:_repr._tcp.example.com');
    assert.ok(dns instanceof DnsSrvDiscovery);
    assert.equal(dns.name, '_repr._tcp.example.com');
    const tlsDns = discoveryFromSpec('dns-srv:grpcs://_repr._tcp.example.com');
    assert.ok(tlsDns instanceof DnsSrvDiscovery);
    assert.equal(tlsDns.name, '_repr._tcp.example.com');
    assert.throws(() => discoveryFromSpec('dns-srv:grpcs://'), /needs a name/);
    const list = discoveryFromSpec('grpc://a:1, b:2,');
    assert.ok(list instanceof StaticDiscovery);
    assert.deepEqual(await list.servers(), ['grpc://a:1', 'grpc://b:2']);
    assert.throws(() => discoveryFromSpec(''), hasCode(Code.INVALID_ARGUMENT));
    assert.throws(() => discoveryFromSpec('file:'), /needs a path/);
    assert.throws(() => discoveryFromSpec('dns-srv:'), /needs a name/);
    assert.throws(() => discoveryFromSpec('nonsense'), /not a server address/);
  });

  it('validates config and builds from it', async () => {
    const c = discoverySchema.parse({ type: 'static', servers: ['a:1'] });
    assert.deepEqual(await createDiscovery(c).servers(), ['grpc://a:1']);
    assert.ok(createDiscovery(discoverySchema.parse({ type: 'file', path: '/x' })) instanceof FileDiscovery);
    assert.ok(createDiscovery(discoverySchema.parse({ type: 'dns-srv', name: '_r._tcp.x' })) instanceof DnsSrvDiscovery);
    assert.equal(discoverySchema.safeParse({ type: 'static', servers: [] }).success, false);
    assert.equal(discoverySchema.safeParse({ type: 'static', servers: ['nope'] }).success, false);
    assert.equal(discoverySchema.safeParse({ type: 'file' }).success, false);
    assert.equal(discoverySchema.safeParse({ type: 'consul', name: 'x' }).success, false);
  });
});
