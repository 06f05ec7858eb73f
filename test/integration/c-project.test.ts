import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { readdirSync, readFileSync, statSync, utimesSync } from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { writeCProject } from '../../support/c-project.js';
import { tmpDir } from '../../support/tmp.js';

/** Every file under `dir` by relative path, with a digest of its bytes. */
function tree(dir: string): Map<string, string> {
  const out = new Map<string, string>();
  const walk = (d: string) => {
    for (const name of readdirSync(d).sort()) {
      const p = path.join(d, name);
      if (statSync(p).isDirectory()) walk(p);
      else out.set(path.relative(dir, p), createHash('sha256').update(readFileSync(p)).digest('hex'));
    }
  };
  walk(dir);
  return out;
}

function make(dir: string, ...args: string[]): string {
  const r = spawnSync('make', ['-j2', ...args], { cwd: dir, encoding: 'utf8' });
  assert.equal(r.status, 0, `make ${args.join(' ')} in ${dir} failed:\n${r.stdout}${r.stderr}`);
  return r.stdout;
}

/**
 * The C project the fan-out test and benchmark build: large enough, nested,
 * with -MMD dependencies, and reproducible with Debian's gcc, so a build
 * done elsewhere can be compared byte for byte with a local one.
 */
describe('the generated C project', () => {
  it('is written the same way every time', () => {
    const a = tmpDir('repr-cproj-a-');
    const b = tmpDir('repr-cproj-b-');
    writeCProject(a);
    writeCProject(b);
    assert.deepEqual(tree(a), tree(b));
  });

  it('builds with gcc into byte-identical objects and program in two different directories', () => {
    // Different lengths too: a path that leaked would shift bytes, not just change them.
    const a = writeCProject(path.join(tmpDir('repr-cproj-x-'), 'one'));
    const b = writeCProject(path.join(tmpDir('repr-cproj-yy-'), 'checkout', 'two'));
    assert.ok(a.sources.length > 40, `${a.sources.length} sources`);
    assert.ok(new Set(a.sources.map((s) => path.dirname(s))).size >= 4, 'spread over nested directories');
    make(a.dir);
    make(b.dir);
    for (const o of [...a.objects, a.program]) {
      const x = readFileSync(path.join(a.dir, o));
      assert.ok(x.length > 0, o);
      assert.ok(x.equals(readFileSync(path.join(b.dir, o))), `${o} differs between the two directories`);
      assert.ok(!x.includes(Buffer.from(a.dir)), `${o} names the directory it was built in`);
    }
    const ran = spawnSync(path.join(a.dir, a.program), { encoding: 'utf8' });
    assert.equal(ran.stdout, a.expectedOutput);
    assert.match(a.expectedOutput, /^linked 48 parts, checksum [0-9a-f]{16}\n$/);
  });

  it('records header dependencies, so touching a shared header rebuilds every source that includes it', () => {
    const p = writeCProject(tmpDir('repr-cproj-dep-'), { parts: 6 });
    make(p.dir);
    const dep = readFileSync(path.join(p.dir, p.objects[0]!.replace(/\.o$/, '.d')), 'utf8');
    assert.match(dep, /include\/util\/table\.h/);
    assert.match(make(p.dir), /Nothing to be done|is up to date/);
    const later = new Date(Date.now() + 5000);
    utimesSync(path.join(p.dir, 'include', 'config.h'), later, later);
    const rebuilt = make(p.dir);
    // Every part includes config.h through chain.h; main.c does not.
    for (const s of p.sources.slice(0, -1)) assert.ok(rebuilt.includes(`-c ${s} `), `${s} was not rebuilt:\n${rebuilt}`);
    assert.ok(!rebuilt.includes('-c src/main.c'), 'main.c was rebuilt without reason');
    assert.equal(spawnSync(path.join(p.dir, p.program), { encoding: 'utf8' }).stdout, p.expectedOutput);
  });
});
