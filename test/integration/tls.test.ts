import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { copyFileSync, readFileSync, writeFileSync } from 'node:fs';
import https from 'node:https';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { connect as tlsConnect } from 'node:tls';
import { computeDigest, fromWire, SHA256 } from '../../src/common/digest.js';
import { Code, codeOf } from '../../src/common/errors.js';
import { ExecClient, uploadAction } from '../../src/client/execution-client.js';
import type { DialTls } from '../../src/grpc/dial.js';
import { ReapiClient } from '../../src/reapi/reapi-client.js';
import { type CertAuthority, type CertFiles, makeCertAuthority } from '../../support/certs.js';
import { fetchStatus, type ServerProcess, spawnWorker, startServerProcess, type WorkerProcess } from '../../support/servers.js';
import { REPR_BIN, spawnRepr } from '../../support/spawn-server.js';
import { tmpDir } from '../../support/tmp.js';

/** The serial number of the certificate a new connection to `port` is served, read below gRPC. */
function servedSerial(port: number, ca: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = tlsConnect({ host: '127.0.0.1', port, ca: readFileSync(ca), ALPNProtocols: ['h2'] }, () => {
      const serial = s.getPeerCertificate().serialNumber;
      s.destroy();
      resolve(serial);
    });
    s.once('error', reject);
  });
}

/** Polls `condition` until it holds; the machine is shared, so the bound is generous and nothing is timed. */
async function eventually<T>(what: string, condition: () => Promise<T | undefined> | T | undefined, timeoutMs = 60_000): Promise<T> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const v = await condition();
    if (v !== undefined && v !== false) return v;
    if (Date.now() > until) throw new Error(`${what}: not within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

/** The JSON log lines a process printed with message `msg`. */
const logged = (p: { logs: string[] }, msg: string): Record<string, unknown>[] =>
  p.logs.flatMap((l) => {
    try {
      const rec = JSON.parse(l) as Record<string, unknown>;
      return rec.msg === msg ? [rec] : [];
    } catch {
      return [];
    }
  });

const blob = (text: string) => {
  const data = Buffer.from(text);
  return { data, digest: computeDigest(SHA256, data) };
};

const clientTls = (ca: CertAuthority, client?: CertFiles): DialTls => ({ caFile: ca.cert, ...(client ? { certFile: client.cert, keyFile: client.key } : {}) });

/** `repr status` as a user runs it: exit code and stderr. */
function reprStatus(args: string[]): { status: number | null; stderr: string } {
  const r = spawnSync(process.execPath, [REPR_BIN, 'status', ...args], {
    encoding: 'utf8',
    env: { ...process.env, REPR_TLS_CA: '', REPR_TLS_CERT: '', REPR_TLS_KEY: '' },
  });
  return { status: r.status, stderr: r.stderr };
}

describe('TLS on a repr server', () => {
  let ca: CertAuthority;
  let server: ServerProcess;
  let plain: ServerProcess;
  before(async () => {
    ca = makeCertAuthority(tmpDir('repr-ca-'));
    const cert = ca.server();
    server = await startServerProcess([
      '--data-dir',
      tmpDir('repr-tls-'),
      '--executors',
      '0',
      '--tls-cert',
      cert.cert,
      '--tls-key',
      cert.key,
      '--metrics-listen',
      '127.0.0.1:0',
    ]);
    plain = await startServerProcess(['--data-dir', tmpDir('repr-plain-'), '--executors', '0']);
  });
  after(async () => {
    await server?.stop();
    await plain?.stop();
  });

  it('says it serves TLS and no mTLS, and is dialled as grpcs://', () => {
    const [listening] = logged(server, 'repr server listening');
    assert.equal(listening?.tls, true);
    assert.equal(listening?.mtls, false);
    assert.equal(server.url, `grpcs://${server.address}`);
    assert.equal(logged(plain, 'repr server listening')[0]?.tls, false);
  });

  it('a client with the CA writes and reads a blob over grpcs://', async () => {
    const client = new ReapiClient({ target: server.url, tls: clientTls(ca) });
    try {
      const { data, digest } = blob('over TLS');
      await client.write(digest, data);
      assert.deepEqual(await client.read(digest), data);
      assert.deepEqual(await client.findMissing([digest]), []);
    } finally {
      client.close();
    }
  });

  it("a client without the CA is refused with one line: the server's certificate is not trusted, pass --tls-ca", async () => {
    const client = new ReapiClient({ target: server.url });
    try {
      await assert.rejects(
        client.getCapabilities(),
        (e: unknown) =>
          codeOf(e) === Code.UNAVAILABLE &&
          (e as { details: string }).details.startsWith(`cannot reach ${server.url}: the server's certificate is not trusted (`) &&
          /; pass --tls-ca with the CA that signed it$/.test((e as { details: string }).details),
      );
    } finally {
      client.close();
    }
    const cli = reprStatus(['--server', server.url]);
    assert.equal(cli.status, 1);
    assert.equal(cli.stderr.trimEnd().split('\n').length, 1, cli.stderr);
    assert.match(
      cli.stderr,
      /^repr: cannot reach grpcs:\/\/127\.0\.0\.1:\d+: the server's certificate is not trusted \(.+\); pass --tls-ca with the CA that signed it\n$/,
    );
    const ok = reprStatus(['--server', server.url, '--tls-ca', ca.cert]);
    assert.equal(ok.status, 0, ok.stderr);
  });

  it('a client trusting another CA, or expecting another name, is refused saying which', async () => {
    const stranger = makeCertAuthority(tmpDir('repr-ca-'), 'stranger-ca');
    const wrongCa = new ReapiClient({ target: server.url, tls: clientTls(stranger) });
    const wrongName = new ReapiClient({ target: server.url, tls: { caFile: ca.cert, serverName: 'cas.example.com' } });
    try {
      await assert.rejects(wrongCa.getCapabilities(), /the server's certificate is not trusted/);
      await assert.rejects(wrongName.getCapabilities(), /the server's certificate is not issued for the name dialled \(.*cas\.example\.com/);
    } finally {
      wrongCa.close();
      wrongName.close();
    }
  });

  it('a plaintext client at the TLS port is told to use grpcs://, a TLS client at a plaintext port to use grpc://', async () => {
    const plainToTls = new ReapiClient({ target: `grpc://${server.address}` });
    const tlsToPlain = new ReapiClient({ target: `grpcs://${plain.address}`, tls: clientTls(ca) });
    try {
      await assert.rejects(
        plainToTls.getCapabilities(),
        (e: unknown) => (e as { details: string }).details === `cannot reach grpc://${server.address}: the server speaks TLS; use grpcs://${server.address}`,
      );
      await assert.rejects(tlsToPlain.getCapabilities(), (e: unknown) =>
        new RegExp(`^cannot reach grpcs://${plain.address}: the server does not speak TLS \\(.+\\); use grpc://${plain.address}$`).test(
          (e as { details: string }).details,
        ),
      );
    } finally {
      plainToTls.close();
      tlsToPlain.close();
    }
    const cli = reprStatus(['--server', `grpc://${server.address}`]);
    assert.equal(cli.stderr, `repr: cannot reach grpc://${server.address}: the server speaks TLS; use grpcs://${server.address}\n`);
  });

  it('serves /metrics and /healthz over HTTPS with the same certificate', async () => {
    const address = logged(server, 'metrics endpoint listening').find((r) => r.tls === true)?.address as string;
    assert.ok(address, 'the metrics endpoint says it serves TLS');
    const get = (route: string) =>
      new Promise<{ status: number; body: string }>((resolve, reject) => {
        https
          .get(`https://${address}${route}`, { ca: readFileSync(ca.cert), agent: false }, (res) => {
            let body = '';
            res.on('data', (d: Buffer) => (body += d.toString()));
            res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
          })
          .on('error', reject);
      });
    assert.deepEqual(await get('/healthz'), { status: 200, body: 'ok' });
    const metrics = await get('/metrics');
    assert.equal(metrics.status, 200);
    assert.match(metrics.body, /^process_cpu_user_seconds_total /m);
    await assert.rejects(fetch(`http://${address}/healthz`), 'no plaintext next to HTTPS');
  });
});

describe('certificate rotation on a running server', () => {
  let ca: CertAuthority;
  let server: ServerProcess;
  let port: number;
  const dir = tmpDir('repr-rotate-');
  const live = { certFile: path.join(dir, 'live.pem'), keyFile: path.join(dir, 'live.key') };
  const install = (files: CertFiles) => {
    copyFileSync(files.key, live.keyFile);
    copyFileSync(files.cert, live.certFile);
  };

  before(async () => {
    ca = makeCertAuthority(path.join(dir, 'ca'));
    install(ca.server('first'));
    const config = path.join(dir, 'server.json');
    writeFileSync(config, JSON.stringify({ tls: { ...live, reloadIntervalSeconds: 1 } }));
    server = await startServerProcess(['--config', config, '--data-dir', path.join(dir, 'data'), '--executors', '0']);
    port = Number(server.address.split(':').pop());
  });
  after(() => server?.stop());

  it('new connections get the new certificate, while a channel opened before keeps working', async () => {
    const old = new ReapiClient({ target: server.url, tls: clientTls(ca) });
    try {
      const first = blob('before the rotation');
      await old.write(first.digest, first.data);
      const before = await servedSerial(port, ca.cert);

      install(ca.server('second'));
      const after = await eventually('the rotated certificate served', async () => {
        const s = await servedSerial(port, ca.cert);
        return s !== before ? s : undefined;
      });
      assert.ok(logged(server, 'TLS certificate reloaded').some((r) => r.serial === after));

      // The old channel's connection predates the rotation and was not dropped.
      assert.deepEqual(await old.read(first.digest), first.data);
      const second = blob('after the rotation');
      await old.write(second.digest, second.data);
      const fresh = new ReapiClient({ target: server.url, tls: clientTls(ca) });
      try {
        assert.deepEqual(await fresh.read(second.digest), second.data);
      } finally {
        fresh.close();
      }
    } finally {
      old.close();
    }
  });

  it('a half-written or garbage certificate is refused: the old one stays, the server keeps serving, the error is logged', async () => {
    const serving = await servedSerial(port, ca.cert);
    const refusals = () => logged(server, 'new TLS certificate refused; still serving the previous one');
    const third = ca.server('third');

    // Half of the new certificate, as a copy caught mid-way leaves it.
    const seen = refusals().length;
    copyFileSync(third.key, live.keyFile);
    writeFileSync(live.certFile, readFileSync(third.cert).subarray(0, 600));
    const err = await eventually('the partial certificate refused', () => refusals()[seen]?.err as string | undefined);
    assert.match(err, /ends in the middle of a certificate|is not the key of the certificate/);
    assert.equal(await servedSerial(port, ca.cert), serving);

    const garbage = refusals().length;
    writeFileSync(live.certFile, 'this is not a certificate\n');
    assert.match(await eventually('the garbage refused', () => refusals()[garbage]?.err as string | undefined), /holds no PEM certificate/);
    assert.equal(await servedSerial(port, ca.cert), serving);

    const client = new ReapiClient({ target: server.url, tls: clientTls(ca) });
    try {
      const b = blob('still serving');
      await client.write(b.digest, b.data);
      assert.deepEqual(await client.read(b.digest), b.data);
    } finally {
      client.close();
    }

    // Finishing the rotation is taken.
    copyFileSync(third.cert, live.certFile);
    await eventually('the finished rotation served', async () => ((await servedSerial(port, ca.cert)) !== serving ? true : undefined));
  });
});

describe('mTLS: a server with --tls-client-ca', () => {
  let ca: CertAuthority;
  let stranger: CertAuthority;
  let server: ServerProcess;
  const workers: WorkerProcess[] = [];
  before(async () => {
    ca = makeCertAuthority(tmpDir('repr-ca-'));
    stranger = makeCertAuthority(tmpDir('repr-ca-'), 'stranger-ca');
    const cert = ca.server();
    server = await startServerProcess([
      '--data-dir',
      tmpDir('repr-mtls-'),
      '--executors',
      '0',
      '--tls-cert',
      cert.cert,
      '--tls-key',
      cert.key,
      '--tls-client-ca',
      ca.cert,
    ]);
  });
  after(async () => {
    for (const w of workers.splice(0)) await w.stop('SIGKILL');
    await server?.stop();
  });

  it('refuses a client without a certificate, and one with a certificate of another CA, at the handshake', async () => {
    assert.equal(logged(server, 'repr server listening')[0]?.mtls, true);
    const none = new ReapiClient({ target: server.url, tls: clientTls(ca) });
    const foreign = new ReapiClient({ target: server.url, tls: clientTls(ca, stranger.client('mallory')) });
    try {
      await assert.rejects(
        none.getCapabilities(),
        (e: unknown) =>
          (e as { details: string }).details === `cannot reach ${server.url}: the server requires a client certificate; pass --tls-cert and --tls-key`,
      );
      await assert.rejects(
        foreign.getCapabilities(),
        (e: unknown) =>
          codeOf(e) === Code.UNAVAILABLE && /^cannot reach .*: the server refused this client's certificate/.test((e as { details: string }).details),
      );
    } finally {
      none.close();
      foreign.close();
    }
  });

  it('serves a client with a certificate of its CA', async () => {
    const alice = new ReapiClient({ target: server.url, tls: clientTls(ca, ca.client('alice')) });
    try {
      const b = blob('from alice');
      await alice.write(b.digest, b.data);
      assert.deepEqual(await alice.read(b.digest), b.data);
    } finally {
      alice.close();
    }
    const bob = ca.client('bob');
    assert.equal((await fetchStatus(server.url, 10_000, { tls: clientTls(ca, bob) })).workers.length, 0);
  });

  it('a repr worker with --tls-ca/--tls-cert/--tls-key registers over grpcs:// and executes an action', async () => {
    const cert = ca.client('worker-1');
    workers.push(
      await spawnWorker(
        server.url,
        ['--name', 'w1', '--data-dir', tmpDir('repr-w1-'), '--executors', '1', '--tls-ca', ca.cert, '--tls-cert', cert.cert, '--tls-key', cert.key],
        60_000,
      ),
    );
    const tls = clientTls(ca, ca.client('builder'));
    const client = new ReapiClient({ target: server.url, tls });
    const exec = new ExecClient(server.url, '', { tls });
    try {
      const action = await uploadAction(client, {
        argv: ['/bin/sh', '-c', 'tr a-z A-Z < in.txt > out.txt'],
        inputs: { 'in.txt': 'mutual tls' },
        outputFiles: ['out.txt'],
      });
      const { response } = await exec.execute(action);
      assert.equal(response?.status?.code ?? 0, Code.OK, response?.status?.message);
      assert.equal(response!.result!.exitCode, 0);
      assert.match(response!.result!.executionMetadata!.worker, /^w1\//);
      const out = response!.result!.outputFiles.find((f) => f.path === 'out.txt')!;
      assert.equal((await client.read(fromWire(SHA256, out.digest))).toString(), 'MUTUAL TLS');
    } finally {
      client.close();
      exec.close();
    }
  });

  it('a repr worker with a certificate of another CA is refused and logs why', async () => {
    const cert = stranger.client('intruder');
    const intruder = await spawnRepr(
      [
        'worker',
        '--scheduler',
        server.url,
        '--name',
        'intruder',
        '--data-dir',
        tmpDir('repr-intruder-'),
        '--executors',
        '1',
        '--tls-ca',
        ca.cert,
        '--tls-cert',
        cert.cert,
        '--tls-key',
        cert.key,
      ],
      (rec) => String(rec.msg).startsWith('cannot reach ') || rec.msg === 'registered with the scheduler',
      60_000,
    );
    workers.push(intruder);
    const lost = intruder.logs.flatMap((l) => (l.startsWith('{') ? [JSON.parse(l) as Record<string, unknown>] : [])).filter((r) => r.retryInMs !== undefined);
    assert.equal(logged(intruder, 'registered with the scheduler').length, 0, 'never registered');
    assert.match(String(lost[0]?.reason), new RegExp(`cannot reach ${server.url}: the server refused this client's certificate`));
    assert.match(String(lost[0]?.msg), new RegExp(`^cannot reach ${server.url}: the server refused this client's certificate.*; retrying in \\d+\\.\\d s$`));
    const s = await fetchStatus(server.url, 10_000, { tls: clientTls(ca, ca.client('admin')) });
    assert.ok(!s.workers.some((w) => w.name === 'intruder'));
  });
});
