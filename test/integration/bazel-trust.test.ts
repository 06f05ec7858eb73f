import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { BazelWorkspace, bazelTlsStartupArgs, hasBazel, processSummary } from '../../support/bazel.js';
import { type CertAuthority, type CertFiles, makeCertAuthority } from '../../support/certs.js';
import { startServerProcess, type ServerProcess } from '../../support/servers.js';
import { tmpDir } from '../../support/tmp.js';

const PACKAGES = ['gen', 'lib', 'app', 'tests', 'tree'];

const token = () => randomBytes(24).toString('base64url');

/**
 * Real Bazel 4.2.3 against a `repr server` that serves TLS, as a farm on a
 * real network would: the remote cache and remote execution over grpcs://
 * with Bazel's --tls_certificate, bearer tokens sent with --remote_header,
 * client certificates with --tls_client_certificate/--tls_client_key, and
 * principals whose roles decide what they may write.
 */
describe('Bazel 4.2.3 over TLS, with tokens, client certificates and roles', () => {
  const dataDir = tmpDir('repr-data-');
  const tokens = { ci: token(), reader: token(), dev: token() };
  let ca: CertAuthority;
  let serverCert: CertFiles;
  let ciCert: CertFiles;
  let server: ServerProcess;
  let ws: BazelWorkspace;
  let local: Map<string, string>;
  let executed = 0;

  const tlsUrl = () => `grpcs://${server.address}`;
  /** Built-in executors, the shared data directory, the CA's loopback certificate. */
  const startTlsServer = (args: string[]) =>
    startServerProcess(['--data-dir', dataDir, '--executors', '4', '--tls-cert', serverCert.cert, '--tls-key', serverCert.key, ...args]);
  const stopServer = async () => {
    if (server) assert.equal(await server.stop(), 0, 'repr server exits cleanly');
  };

  before(async () => {
    assert.ok(hasBazel(), 'bazel is not installed: apt-get install -y bazel-bootstrap (see README)');
    ca = makeCertAuthority(tmpDir('repr-ca-'));
    serverCert = ca.server();
    ciCert = ca.client('ci');
    ws = new BazelWorkspace(undefined, bazelTlsStartupArgs());
    await ws.ok(['test', '//...']);
    local = ws.outputHashes(PACKAGES);
  });

  after(async () => {
    await ws?.shutdown();
    await server?.stop();
  });

  describe('TLS and bearer tokens', () => {
    before(async () => {
      const tokensFile = path.join(tmpDir('repr-tokens-'), 'tokens');
      writeFileSync(tokensFile, `ci:${tokens.ci} ci\nreader:${tokens.reader} reader\ndev:${tokens.dev} developer\n`, { mode: 0o600 });
      server = await startTlsServer(['--auth-tokens-file', tokensFile]);
    });
    after(stopServer);

    const cacheFlags = (who: keyof typeof tokens, instance: string) => [
      `--remote_cache=${tlsUrl()}`,
      `--tls_certificate=${ca.cert}`,
      `--remote_header=authorization=Bearer ${tokens[who]}`,
      `--remote_instance_name=${instance}`,
      '--remote_retries=0',
    ];

    it('a ci principal fills the remote cache over grpcs://; after `bazel clean` every action is a hit', async () => {
      await ws.ok(['clean']);
      const cold = processSummary(await ws.ok(['test', '//...', ...cacheFlags('ci', 'main')]));
      executed = cold.total - (cold.kinds.get('internal') ?? 0);
      assert.ok(executed >= 10, `expected at least 10 actions, got ${executed}`);
      assert.deepEqual(ws.outputHashes(PACKAGES), local);
      await ws.ok(['clean']);
      const warm = processSummary(await ws.ok(['test', '//...', ...cacheFlags('ci', 'main')]));
      assert.equal(warm.kinds.get('remote cache hit'), executed, `all hits: ${JSON.stringify([...warm.kinds])}`);
      assert.deepEqual(ws.outputHashes(PACKAGES), local);
    });

    it('a read-only principal gets the hits, and its own results are refused, not written; Bazel still succeeds', async () => {
      await ws.ok(['clean']);
      const hits = processSummary(await ws.ok(['test', '//...', ...cacheFlags('reader', 'main')]));
      assert.equal(hits.kinds.get('remote cache hit'), executed, `reader reads ci's entries: ${JSON.stringify([...hits.kinds])}`);

      // A fresh instance: nothing cached, so the reader builds locally and Bazel tries to upload.
      await ws.ok(['clean']);
      const own = await ws.ok(['test', '//...', ...cacheFlags('reader', 'reader-own')]);
      assert.equal(processSummary(own).kinds.get('remote cache hit') ?? 0, 0);
      assert.match(own, /PERMISSION_DENIED/, 'Bazel reports the refused uploads');
      assert.deepEqual(ws.outputHashes(PACKAGES), local, 'the build succeeded with local results');
      assert.ok(
        server.logs.some((l) => l.includes('"principal":"reader"') && /cas-write|ac-write/.test(l)),
        'the server logged the denials with the principal',
      );

      await ws.ok(['clean']);
      const again = processSummary(await ws.ok(['test', '//...', ...cacheFlags('reader', 'reader-own')]));
      assert.equal(again.kinds.get('remote cache hit') ?? 0, 0, `nothing the reader built was cached: ${JSON.stringify([...again.kinds])}`);
    });

    it('a developer executes remotely over grpcs://; the scheduler writes the results, so the rerun after clean is all hits', async () => {
      const flags = [
        `--remote_executor=${tlsUrl()}`,
        `--tls_certificate=${ca.cert}`,
        `--remote_header=authorization=Bearer ${tokens.dev}`,
        '--remote_instance_name=exec',
        '--remote_default_exec_properties=OSFamily=linux',
        '--spawn_strategy=remote',
        '--remote_retries=0',
        '--jobs=8',
      ];
      await ws.ok(['clean']);
      const cold = processSummary(await ws.ok(['test', '//...', ...flags]));
      const remote = cold.total - (cold.kinds.get('internal') ?? 0);
      assert.equal(cold.kinds.get('remote'), remote, `every action ran remotely: ${JSON.stringify([...cold.kinds])}`);
      assert.deepEqual(ws.outputHashes(PACKAGES), local);
      await ws.ok(['clean']);
      const warm = processSummary(await ws.ok(['test', '//...', ...flags]));
      assert.equal(warm.kinds.get('remote cache hit'), remote, `all hits: ${JSON.stringify([...warm.kinds])}`);
    });
  });

  describe('mutual TLS: the principal is the client certificate', () => {
    before(async () => {
      // The same data directory: what the ci token wrote is there.
      server = await startTlsServer(['--tls-client-ca', ca.cert, '--auth-mtls', '--auth-grant', 'ci=ci']);
    });
    after(stopServer);

    const mtls = (cert?: CertFiles) => [
      `--remote_cache=${tlsUrl()}`,
      `--tls_certificate=${ca.cert}`,
      ...(cert ? [`--tls_client_certificate=${cert.cert}`, `--tls_client_key=${cert.key}`] : []),
      '--remote_instance_name=main',
      '--remote_retries=0',
    ];

    it('Bazel with a client certificate of the CA gets every action from the cache', async () => {
      await ws.ok(['clean']);
      const warm = processSummary(await ws.ok(['test', '//...', ...mtls(ciCert)]));
      assert.equal(warm.kinds.get('remote cache hit'), executed, `all hits: ${JSON.stringify([...warm.kinds])}`);
      assert.deepEqual(ws.outputHashes(PACKAGES), local);
    });

    it('Bazel without a client certificate is refused', async () => {
      await ws.ok(['clean']);
      const r = await ws.run(['build', '//...', ...mtls()]);
      const out = r.stderr + r.stdout;
      assert.notEqual(r.code, 0, `Bazel must not get through without a certificate:\n${out.slice(-3000)}`);
      assert.doesNotMatch(out, /remote cache hit/);
      // Refused at the handshake, which Bazel reports as an unreachable remote.
      assert.match(out, /UNAVAILABLE|handshake|certificate|SSL/i, out.slice(-3000));
    });
  });
});
