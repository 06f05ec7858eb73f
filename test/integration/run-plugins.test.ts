import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { REPR_BIN } from '../../support/spawn-server.js';
import { type ServerProcess, startServerProcess } from '../../support/servers.js';
import { tmpDir } from '../../support/tmp.js';

const TOKEN = 'ci-token-0123456789abcdef';

/**
 * The plugins a deployment selects by configuration, end to end: bearer-token
 * authentication on every call, telemetry of each run to Prometheus (served
 * on /metrics) and to a JSON-lines file, server discovery from a file.
 */
describe('repr run with plugins: token auth, telemetry sinks, file discovery', () => {
  let server: ServerProcess;
  let metricsAddress = '';
  let proj: string;
  let jsonl: string;
  let serversFile: string;

  before(async () => {
    const dir = tmpDir('repr-plugins-');
    const tokens = path.join(dir, 'tokens');
    // Roles from the tokens file and from a grant flag: `repr run` needs developer, `repr status` admin.
    writeFileSync(tokens, `ci:${TOKEN} developer\n`);
    jsonl = path.join(dir, 'telemetry', 'runs.jsonl');
    const config = path.join(dir, 'server.json');
    writeFileSync(config, JSON.stringify({ telemetry: [{ type: 'prometheus' }, { type: 'jsonl', path: jsonl }], execution: { executors: 1 } }));
    server = await startServerProcess([
      '--config',
      config,
      '--data-dir',
      path.join(dir, 'data'),
      '--auth-tokens-file',
      tokens,
      '--auth-grant',
      'ci=admin',
      '--metrics-listen',
      '127.0.0.1:0',
    ]);
    for (const line of server.logs) {
      try {
        const rec = JSON.parse(line) as { msg?: string; address?: string };
        if (rec.msg === 'metrics endpoint listening') metricsAddress = rec.address!;
      } catch {
        /* not JSON */
      }
    }
    proj = path.join(dir, 'proj');
    mkdirSync(proj);
    writeFileSync(path.join(proj, 'in.txt'), 'plugin test\n');
    serversFile = path.join(dir, 'servers');
    writeFileSync(serversFile, `# managed by the test\n${server.url}\n`);
  });

  after(async () => {
    await server?.stop();
  });

  const run = (args: string[], env: Record<string, string> = {}) =>
    spawnSync(process.execPath, [REPR_BIN, 'run', ...args], {
      cwd: proj,
      encoding: 'utf8',
      env: { ...process.env, REPR_RUN_RECORDS: tmpDir('repr-plugins-rec-'), REPR_TOKEN: '', ...env },
      timeout: 60_000,
    });

  it('refuses callers without a valid token and serves those with one', () => {
    const none = run(['--server', server.url, '--', 'cat', 'in.txt']);
    assert.equal(none.status, 125, none.stderr);
    assert.match(none.stderr, /UNAUTHENTICATED|authorization/i);
    const wrong = run(['--server', server.url, '--token', 'not-the-token-at-all', '--', 'cat', 'in.txt']);
    assert.equal(wrong.status, 125);
    assert.match(wrong.stderr, /PERMISSION_DENIED|invalid token/i);
    const ok = run(['--server', `file:${serversFile}`, '--', 'cat', 'in.txt'], { REPR_TOKEN: TOKEN });
    assert.equal(ok.status, 0, ok.stderr);
    assert.equal(ok.stdout, 'plugin test\n');
    const status = spawnSync(process.execPath, [REPR_BIN, 'status', '--server', server.url], { encoding: 'utf8', env: { ...process.env, REPR_TOKEN: '' } });
    assert.notEqual(status.status, 0, 'repr status needs the token too');
    const status2 = spawnSync(process.execPath, [REPR_BIN, 'status', '--server', server.url, '--token', TOKEN], { encoding: 'utf8' });
    assert.equal(status2.status, 0, status2.stderr);
  });

  it('counts runs in Prometheus metrics and writes one JSON line per run', async () => {
    const r = run(['--server', server.url, '--', '/bin/sh', '-c', 'cat in.txt; exit 3'], { REPR_TOKEN: TOKEN });
    assert.equal(r.status, 3);
    const res = await fetch(`http://${metricsAddress}/metrics`);
    assert.equal(res.status, 200);
    const text = await res.text();
    assert.match(text, /repr_run_total\{[^}]*exit="3"[^}]*\} 1/);
    assert.match(text, /repr_run_total\{[^}]*exit="0"[^}]*\} 1/);
    assert.match(text, /repr_run_queries_total \d+/);
    // The scheduler's state, read at scrape time.
    assert.match(text, /repr_scheduler_executors 1\n/);
    assert.match(text, /repr_scheduler_busy_executors 0\n/);
    assert.match(text, /repr_scheduler_queued_actions 0\n/);
    // A scheduler that shares no state is a farm of one.
    assert.match(text, /repr_scheduler_peers 1\n/);
    // The JSON-lines sink writes in the background.
    let lines: { argv: string[]; exitCode: number; queries: number }[] = [];
    for (let i = 0; i < 50 && lines.length < 2; i++) {
      try {
        lines = readFileSync(jsonl, 'utf8')
          .trim()
          .split('\n')
          .map((l) => JSON.parse(l) as (typeof lines)[number]);
      } catch {
        /* not written yet */
      }
      if (lines.length < 2) await new Promise((res2) => setTimeout(res2, 100));
    }
    assert.equal(lines.length, 2);
    assert.deepEqual(
      lines.map((l) => l.exitCode),
      [0, 3],
    );
    assert.ok(lines[0]!.queries >= 1, 'the first run asked for in.txt');
  });
});
