import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { REPO_ROOT } from '../../support/servers.js';
import { spawnSync } from 'node:child_process';
import { REPR_BIN } from '../../support/spawn-server.js';
import path from 'node:path';

describe('repr --version', () => {
  it("prints package.json's version and exits 0", () => {
    const expected = (JSON.parse(readFileSync(path.join(REPO_ROOT, 'package.json'), 'utf8')) as { version: string }).version;
    for (const flag of ['--version', '-V']) {
      const r = spawnSync(process.execPath, [REPR_BIN, flag], { encoding: 'utf8' });
      assert.equal(r.status, 0, r.stderr);
      assert.equal(r.stdout.trim(), expected);
    }
  });
});
