import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync, rmSync } from 'node:fs';
import path from 'node:path';
import { it } from 'node:test';
import { REPO_ROOT } from '../../support/servers.js';

// The benchmarks are not part of the tests, but their smoke mode is, so that
// `npm run bench` cannot rot unnoticed.
it('npm run bench -- --quick runs every benchmark and writes results-quick.json', () => {
  // Results merge into the file; start from none so every entry is this run's.
  rmSync(path.join(REPO_ROOT, 'bench', 'results-quick.json'), { force: true });
  const r = spawnSync(process.execPath, [path.join(REPO_ROOT, 'dist', 'bench', 'main.js'), '--quick'], { encoding: 'utf8', timeout: 400_000 });
  assert.equal(r.status, 0, `bench failed:\n${r.stderr}\n${r.stdout}`);
  const results = JSON.parse(readFileSync(path.join(REPO_ROOT, 'bench', 'results-quick.json'), 'utf8')) as {
    quick: boolean;
    results: Record<string, unknown[]>;
  };
  assert.equal(results.quick, true);
  for (const name of [
    'bytestream',
    'find-missing',
    'ac-hit',
    'shared-ac',
    'execute-trivial',
    'dispatch',
    'repr-run',
    'memory',
    'bazel',
    'startup',
    'metrics',
    'schedulers',
    'autoscale',
    'fanout',
    'autoscale-pool',
  ])
    assert.ok(results.results[name]?.length, `${name} reported metrics`);
});
