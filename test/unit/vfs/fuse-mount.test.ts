import type { Stats } from 'node:fs';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { chmod, copyFile, lstat, mkdir, readFile, readdir, readlink, symlink, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { FuseMount, type FuseMountOptions } from '../../../src/vfs/fuse-mount.js';
import type { VChange, VNode, VPathNode } from '../../../src/vfs/vfs.js';
import { tmpDir } from '../../../support/tmp.js';

/*
 * Everything the test process does to the mount goes through child processes:
 * this process answers the helper's queries, so it must never block on the
 * mount itself (nor fill libuv's thread pool with calls that wait on it).
 */

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

function sh(cmd: string, opts: { cwd?: string; timeoutMs?: number } = {}): Promise<Run> {
  return exe('sh', ['-c', cmd], opts);
}

function exe(file: string, args: string[], opts: { cwd?: string; timeoutMs?: number } = {}): Promise<Run> {
  return new Promise((resolve, reject) => {
    const p = spawn(file, args, { cwd: opts.cwd, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    p.stdout.setEncoding('utf8').on('data', (s: string) => (stdout += s));
    p.stderr.setEncoding('utf8').on('data', (s: string) => (stderr += s));
    const timer = setTimeout(() => p.kill('SIGKILL'), opts.timeoutMs ?? 20_000);
    p.on('error', reject);
    p.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

async function ok(cmd: string, cwd?: string): Promise<string> {
  const r = await sh(cmd, { cwd });
  assert.equal(r.code, 0, `${cmd}\nstdout: ${r.stdout}\nstderr: ${r.stderr}`);
  return r.stdout;
}

const sha256 = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

/**
 * Plays the client: answers from a real directory on disk whose absolute
 * paths are the client paths. A listing carries sizes but no hashes, as the
 * real client's does; fetch copies content into a cache dir named by hash.
 */
class DiskClient {
  readonly queries: { path: string; list: boolean }[] = [];
  readonly fetches: string[] = [];
  private readonly byHash = new Map<string, string>();
  readonly cacheDir = tmpDir('repr-fuse-cache-');
  failPath?: string;

  async node(p: string, withHash = true): Promise<VNode> {
    let st: Stats;
    try {
      st = await lstat(p);
    } catch {
      return { kind: 'absent' };
    }
    if (st.isDirectory()) return { kind: 'dir', mtimeMs: st.mtimeMs };
    if (st.isSymbolicLink()) return { kind: 'symlink', target: await readlink(p), mtimeMs: st.mtimeMs };
    const n: VNode = { kind: 'file', size: st.size, executable: (st.mode & 0o100) !== 0, mtimeMs: st.mtimeMs };
    if (withHash) {
      n.hash = sha256(await readFile(p));
      this.byHash.set(n.hash, p);
    }
    return n;
  }

  query = async (p: string, list: boolean): Promise<VNode> => {
    this.queries.push({ path: p, list });
    if (p === this.failPath) throw new Error('client went away');
    const n = await this.node(p);
    if (list && n.kind === 'dir') {
      const names = (await readdir(p)).sort();
      n.entries = await Promise.all(names.map(async (name) => ({ name, node: await this.node(path.join(p, name), false) })));
    }
    return n;
  };

  fetch = async (hash: string, _size: number): Promise<string> => {
    this.fetches.push(hash);
    const src = this.byHash.get(hash);
    if (!src) throw new Error(`unknown blob ${hash}`);
    const dst = path.join(this.cacheDir, hash);
    await copyFile(src, dst);
    return dst;
  };

  /** Full mappings of a tree: every dir with its listing, every file with its hash. */
  async mappings(root: string): Promise<VPathNode[]> {
    const out: VPathNode[] = [];
    const walk = async (p: string): Promise<void> => {
      const n = await this.node(p);
      if (n.kind === 'dir') {
        const names = (await readdir(p)).sort();
        n.entries = await Promise.all(names.map(async (name) => ({ name, node: await this.node(path.join(p, name)) })));
        for (const name of names) await walk(path.join(p, name));
      }
      out.push({ path: p, node: n });
    };
    await walk(root);
    return out;
  }

  queriesFor(p: string): number {
    return this.queries.filter((q) => q.path === p).length;
  }
}

/** A client project on disk: <base>/client/home/u/proj with sources, a header dir and a binary. */
async function makeProject(): Promise<{ base: string; root: string; inc: string }> {
  const base = tmpDir('repr-fuse-');
  const root = path.join(base, 'client', 'home', 'u', 'proj');
  const inc = path.join(root, 'include');
  await mkdir(path.join(root, 'src', 'deep', 'er'), { recursive: true });
  await mkdir(inc, { recursive: true });
  await writeFile(path.join(root, 'README'), 'hello from the client\n');
  await writeFile(path.join(root, 'src', 'main.c'), '#include "lib.h"\nint main(void) { return LIB_VALUE; }\n');
  await writeFile(path.join(root, 'src', 'deep', 'er', 'needle.txt'), 'a needle in the tree\n');
  await writeFile(path.join(inc, 'lib.h'), '#define LIB_VALUE 42\n');
  await writeFile(path.join(root, 'blob.bin'), randomBytes(1 << 20));
  await writeFile(path.join(root, 'run.sh'), '#!/bin/sh\necho ran\n');
  await chmod(path.join(root, 'run.sh'), 0o755);
  await writeFile(path.join(root, 'old.txt'), 'old content\n');
  await writeFile(path.join(root, 'gone.txt'), 'to be removed\n');
  await writeFile(path.join(root, 'tool'), 'a tool\n');
  await mkdir(path.join(root, 'emptydir'));
  await mkdir(path.join(root, 'olddir', 'sub'), { recursive: true });
  await writeFile(path.join(root, 'olddir', 'sub', 'x.txt'), 'x\n');
  await symlink('README', path.join(root, 'link'));
  await mkdir(path.join(root, 'quiet'));
  await writeFile(path.join(root, 'quiet', 'q.txt'), 'q\n');
  return { base, root, inc };
}

async function startMount(client: DiskClient, roots: string[], extra: Partial<FuseMountOptions> = {}): Promise<{ m: FuseMount; mnt: string; scratch: string }> {
  const mnt = tmpDir('repr-fuse-mnt-');
  const scratch = tmpDir('repr-fuse-scratch-');
  const m = await FuseMount.start({
    mountpoint: mnt,
    scratchDir: scratch,
    roots,
    mappings: [],
    uid: 65534,
    gid: 65534,
    query: client.query,
    fetch: client.fetch,
    ...extra,
  });
  return { m, mnt, scratch };
}

async function mounted(mnt: string): Promise<boolean> {
  const text = await readFile('/proc/self/mounts', 'utf8');
  return text.split('\n').some((l) => l.split(' ')[1] === mnt);
}

describe('FUSE mount of a client tree (real mount, real processes)', () => {
  let client: DiskClient;
  let root: string;
  let base: string;
  let inc: string;
  let m: FuseMount;
  let mnt: string;
  let scratch: string;
  const at = (p: string): string => path.join(mnt, p);

  before(async () => {
    ({ base, root, inc } = await makeProject());
    client = new DiskClient();
    ({ m, mnt, scratch } = await startMount(client, [root]));
  });
  after(async () => {
    await m.close();
  });

  it('shows client files byte-identical, listing unknown dirs on demand', async () => {
    const readme = await ok(`cat ${at(root)}/README`);
    assert.equal(readme, 'hello from the client\n');
    const sum = (await ok(`sha256sum ${at(root)}/blob.bin`)).split(' ')[0];
    assert.equal(sum, sha256(await readFile(path.join(root, 'blob.bin'))));
    const ls = (await ok(`ls -A ${at(root)}`)).split('\n').filter(Boolean);
    assert.deepEqual(ls, (await readdir(root)).sort());
    assert.equal(client.queries.filter((q) => q.path === root && q.list).length, 1, 'the root was listed once');
    assert.match(await ok(`grep -r needle ${at(root)}/src`), /needle\.txt:a needle in the tree/);
    assert.equal((await ok(`readlink ${at(root)}/link`)).trim(), 'README');
    assert.equal(await ok(`cat ${at(root)}/link`), 'hello from the client\n');
    // Attributes: sizes, the executable bit, owner, and the client's mtime (make relies on it).
    const st = (await ok(`stat -c '%s %a %u %g %Y' ${at(root)}/run.sh ${at(root)}/README ${at(root)}/src`)).trim().split('\n');
    const rs = await lstat(path.join(root, 'run.sh'));
    assert.equal(st[0], `${rs.size} 755 65534 65534 ${Math.floor(rs.mtimeMs / 1000)}`);
    assert.match(st[1]!, /^22 644 65534 65534 /);
    assert.match(st[2]!, /^\d+ 755 65534 65534 /);
    assert.equal((await ok(`${at(root)}/run.sh`)).trim(), 'ran');
  });

  it('answers ENOENT for missing paths and caches the absence', async () => {
    const missing = path.join(root, 'src', 'nope.h');
    const before = client.queriesFor(missing);
    const r1 = await sh(`cat ${at(missing)}`);
    assert.notEqual(r1.code, 0);
    assert.match(r1.stderr, /No such file/);
    const r2 = await sh(`test -e ${at(missing)} || test -e ${at(missing)} || echo absent`);
    assert.equal(r2.stdout, 'absent\n');
    // src was already listed by grep -r: its listing answers without any query at all.
    assert.equal(client.queriesFor(missing) - before, 0);
    // In a dir never listed, a missing name costs exactly one query, then none.
    const m2 = path.join(root, 'olddir', 'sub', 'missing.h');
    await sh(`cat ${at(m2)}; cat ${at(m2)}; test -e ${at(m2)}`);
    assert.equal(client.queriesFor(m2), 1);
  });

  it('compiles with gcc, finding an include on demand', { skip: !existsSync('/usr/bin/gcc') && 'no gcc' }, async () => {
    await ok(`gcc -c -I ${at(inc)} -o ${at(root)}/main.o ${at(root)}/src/main.c`);
    assert.ok(
      client.queries.some((q) => q.path === path.join(inc, 'lib.h')),
      'the header was looked up',
    );
    const report = await m.report();
    assert.ok(report.accessed.includes(path.join(inc, 'lib.h')));
    const ch = (await m.changes()).find((c) => c.path === path.join(root, 'main.o'));
    assert.ok(ch?.file, 'the object file is a change with its scratch content');
    assert.ok(ch.file.startsWith(scratch));
    assert.ok((await readFile(ch.file)).subarray(0, 4).equals(Buffer.from([0x7f, 0x45, 0x4c, 0x46])), 'an ELF object');
    assert.equal(ch.size, (await readFile(ch.file)).length);
    await ok(`rm ${at(root)}/main.o`);
  });

  it('keeps writes copy-on-write and reports the changes exactly', async () => {
    const r = at(root);
    await ok(
      [
        `echo new > ${r}/new.txt`,
        `echo more >> ${r}/old.txt`,
        `rm ${r}/gone.txt`,
        `mv ${r}/README ${r}/README.md`,
        `mkdir -p ${r}/made/a/b`,
        `rmdir ${r}/emptydir`,
        `chmod +x ${r}/tool`,
        `cp ${r}/run.sh ${r}/made/a/run2.sh`,
        `ln -s README.md ${r}/link2`,
        `mkdir ${r}/tmpdir && echo t > ${r}/tmpdir/t && rm -r ${r}/tmpdir`,
        `mv ${r}/made/a/b ${r}/made/bb`,
        `rm -r ${r}/olddir`,
        `test ! -e ${r}/olddir && test -d ${r}/made/bb && test ! -e ${r}/made/a/b`,
      ].join(' && '),
    );
    assert.equal(await ok(`cat ${r}/old.txt`), 'old content\nmore\n');
    assert.equal(await ok(`cat ${r}/README.md`), 'hello from the client\n');
    assert.equal((await ok(`stat -c %a ${r}/tool`)).trim(), '755');
    const h = (s: string): string => sha256(Buffer.from(s));
    const changes = await m.changes();
    const shown = changes.map((c) => {
      const out: VChange = { ...c };
      if (c.file) {
        assert.ok(c.file.startsWith(scratch), `${c.path} content lives in scratch`);
        out.file = 'SCRATCH';
      }
      return out;
    });
    const p = (s: string): string => path.join(root, s);
    assert.deepEqual(shown, [
      { path: p('README'), kind: 'absent' },
      { path: p('README.md'), kind: 'file', hash: h('hello from the client\n'), size: 22, mode: 0o644 },
      { path: p('emptydir'), kind: 'absent' },
      { path: p('gone.txt'), kind: 'absent' },
      { path: p('link2'), kind: 'symlink', target: 'README.md' },
      { path: p('made'), kind: 'dir' },
      { path: p('made/a'), kind: 'dir' },
      { path: p('made/a/run2.sh'), kind: 'file', file: 'SCRATCH', size: 19, mode: 0o755 },
      { path: p('made/bb'), kind: 'dir' },
      { path: p('new.txt'), kind: 'file', file: 'SCRATCH', size: 4, mode: 0o644 },
      { path: p('old.txt'), kind: 'file', file: 'SCRATCH', size: 17, mode: 0o644 },
      { path: p('olddir'), kind: 'absent' },
      { path: p('tool'), kind: 'file', hash: h('a tool\n'), size: 7, mode: 0o755 },
    ]);
    const oldTxt = changes.find((c) => c.path === p('old.txt'))!;
    assert.equal(await readFile(oldTxt.file!, 'utf8'), 'old content\nmore\n');
    // The client's files are untouched.
    assert.equal(await readFile(p('old.txt'), 'utf8'), 'old content\n');
    assert.ok(existsSync(p('gone.txt')) && existsSync(p('README')) && existsSync(p('olddir/sub/x.txt')));
  });

  it('moves a client dir: renamed when wholly known here, else copied by mv after EXDEV', async () => {
    const r = at(root);
    // grep -r read all of src, so it moves as a rename: its files keep their hashes (nothing to upload).
    await ok(`mv ${r}/src ${r}/src2 && cat ${r}/src2/deep/er/needle.txt && test ! -e ${r}/src`);
    // include was never listed: rename says EXDEV and mv copies, so its files become new content.
    const before = client.queries.length;
    await ok(`mv ${r}/include ${r}/include2 && cat ${r}/include2/lib.h && test ! -e ${r}/include`);
    assert.ok(
      client.queries.slice(before).some((q) => q.path === inc && q.list),
      'mv listed the dir to copy it',
    );
    const changes = await m.changes();
    const find = (s: string): VChange | undefined => changes.find((c) => c.path === path.join(root, s));
    assert.deepEqual(find('src'), { path: path.join(root, 'src'), kind: 'absent' });
    assert.deepEqual(find('include'), { path: inc, kind: 'absent' });
    assert.ok(!changes.some((c) => c.path.startsWith(`${path.join(root, 'src')}/`) || c.path.startsWith(`${inc}/`)), 'a removed dir is reported once');
    assert.deepEqual(find('src2/deep/er/needle.txt'), {
      path: path.join(root, 'src2/deep/er/needle.txt'),
      kind: 'file',
      hash: sha256(Buffer.from('a needle in the tree\n')),
      size: 21,
      mode: 0o644,
    });
    assert.equal(find('src2/deep')?.kind, 'dir');
    assert.ok(find('include2/lib.h')?.file, 'copied content is new content');
    assert.equal(find('include2')?.kind, 'dir');
  });

  it('shows nothing outside the roots and refuses writes in their ancestors', async () => {
    assert.equal((await ok(`ls -A ${mnt}`)).trim(), base.split('/')[1]);
    const parent = path.dirname(root);
    assert.equal((await ok(`ls -A ${at(parent)}`)).trim(), 'proj');
    assert.notEqual((await sh(`ls ${mnt}/etc`)).code, 0);
    assert.notEqual((await sh(`cat ${at(path.join(base, 'client', 'other'))}`)).code, 0);
    const w = await sh(`touch ${at(parent)}/x`);
    assert.notEqual(w.code, 0);
    assert.match(w.stderr, /Read-only file system|Permission denied/);
    assert.notEqual((await sh(`mkdir ${at(parent)}/d`)).code, 0);
    assert.notEqual((await sh(`rmdir ${at(root)}`)).code, 0);
    const report = await m.report();
    assert.ok(!report.accessed.includes(parent), 'synthesized ancestors are not client accesses');
  });

  it('lets the unprivileged sandbox user read and write under a root', async () => {
    const r = at(root);
    const out = await ok(
      `setpriv --reuid=65534 --regid=65534 --clear-groups -- sh -c 'id -u && cat ${r}/README.md && echo mine > ${r}/by-nobody.txt && cat ${r}/by-nobody.txt && mkdir ${r}/nd && touch ${r}/nd/f'`,
    );
    assert.equal(out, '65534\nhello from the client\nmine\n');
    assert.ok((await m.changes()).some((c) => c.path === path.join(root, 'by-nobody.txt')));
  });

  it('fails an op with EIO when the client query fails, and does not cache the failure', async () => {
    // In a dir never listed, so the name is asked about rather than ruled out by a listing.
    const p = path.join(root, 'quiet', 'flaky.txt');
    client.failPath = p;
    const r = await sh(`cat ${at(p)}`);
    assert.match(r.stderr, /Input\/output error/);
    client.failPath = undefined;
    assert.match((await sh(`cat ${at(p)}`)).stderr, /No such file/);
  });

  it('reports accesses, listings and the number of queries', async () => {
    const report = await m.report();
    assert.equal(report.queries, client.queries.length);
    assert.equal(report.mappedHits, 0);
    assert.equal(report.accessed[0], root);
    assert.ok(report.accessed.includes(path.join(root, 'src', 'nope.h')), 'absent paths are accesses too');
    assert.ok(report.listed.includes(root));
    assert.equal(new Set(report.accessed).size, report.accessed.length);
  });
});

describe('FUSE mount lifecycle and costs', () => {
  it('makes no query at all when the mappings cover everything read', async () => {
    const { root } = await makeProject();
    const client = new DiskClient();
    const mappings = await client.mappings(root);
    const { m, mnt } = await startMount(client, [root], { mappings });
    try {
      const r = path.join(mnt, root);
      await ok(`cat ${r}/README ${r}/src/main.c > /dev/null && ls -R ${r} > /dev/null && grep -rq needle ${r} && test ! -e ${r}/nothing`);
      const report = await m.report();
      assert.equal(report.queries, 0);
      assert.deepEqual(client.queries, []);
      assert.ok(report.mappedHits > 5, `mapped hits: ${report.mappedHits}`);
    } finally {
      await m.close();
    }
  });

  it('prepared ahead, answers nothing before its run configures it: a lookup made meanwhile waits and sees the run tree', async () => {
    const { root } = await makeProject();
    const client = new DiskClient();
    const mnt = tmpDir('repr-fuse-mnt-');
    const m = await FuseMount.prepare({ mountpoint: mnt, scratchDir: tmpDir('repr-fuse-scratch-'), uid: 65534, gid: 65534 });
    try {
      assert.ok(await mounted(mnt));
      // Answered from an empty tree, these would be ENOENT, cached by the kernel for the run to come.
      const early = Promise.all([sh(`cat ${path.join(mnt, root, 'README')}`), sh(`ls ${mnt}`)]);
      const settledEarly = await Promise.race([early.then(() => true), new Promise((r) => setTimeout(() => r(false), 300))]);
      assert.equal(settledEarly, false, 'lookups wait for the run');
      assert.deepEqual(client.queries, [], 'nobody is asked before the run');
      m.configure({ roots: [root], mappings: [], query: client.query, fetch: client.fetch });
      const [cat, ls] = await early;
      assert.equal(cat.code, 0, cat.stderr);
      assert.equal(cat.stdout, 'hello from the client\n');
      assert.equal(ls.stdout.trim(), root.split('/')[1]);
      assert.throws(() => m.configure({ roots: [root], mappings: [], query: client.query, fetch: client.fetch }), /one run only/);
    } finally {
      await m.close();
    }
    assert.equal(await mounted(mnt), false);
  });

  it('serves the next mount from the helper process a closed one gave back, with nothing of the first mount in it', async () => {
    const first = await makeProject();
    const one = new DiskClient();
    const a = await startMount(one, [first.root]);
    assert.equal(await ok(`cat ${path.join(a.mnt, first.root, 'README')}`), 'hello from the client\n');
    await ok(`echo written > ${path.join(a.mnt, first.root, 'new.txt')}`);
    const pid = a.m.pid;
    await a.m.close();
    // The second client claims the same path with other files.
    const two = new DiskClient();
    const other = tmpDir('repr-fuse-other-');
    const b = await startMount(two, [first.root], {
      query: (p, list) => two.query(path.join(other, path.relative(first.root, p)), list),
    });
    try {
      assert.equal(b.m.pid, pid, 'the helper was used again');
      const seen = await sh(`cat ${path.join(b.mnt, first.root, 'README')} ${path.join(b.mnt, first.root, 'new.txt')}; ls -A ${path.join(b.mnt, first.root)}`);
      assert.match(seen.stderr, /README: No such file/);
      assert.match(seen.stderr, /new\.txt: No such file/);
      assert.equal(seen.stdout, '');
      assert.deepEqual(await b.m.changes(), []);
    } finally {
      await b.m.close();
    }
  });

  it('asks once for a file many processes open at the same time (single flight)', async () => {
    const { root } = await makeProject();
    const client = new DiskClient();
    const { m, mnt } = await startMount(client, [root]);
    try {
      const f = path.join(mnt, root, 'blob.bin');
      await ok(`${Array.from({ length: 8 }, () => `cat ${f} > /dev/null &`).join(' ')} wait`);
      assert.equal(client.queriesFor(path.join(root, 'blob.bin')), 1);
      assert.equal(client.fetches.length, 1);
    } finally {
      await m.close();
    }
  });

  it('measures small-file open+read through the mount', async () => {
    const { root } = await makeProject();
    const dir = path.join(root, 'many');
    await mkdir(dir);
    const n = 300;
    for (let i = 0; i < n; i++) await writeFile(path.join(dir, `f${i}.h`), `// header ${i}\n`);
    const client = new DiskClient();
    const { m, mnt } = await startMount(client, [root], { mappings: await client.mappings(root) });
    try {
      const script = `const fs=require('fs');const d=${JSON.stringify(path.join(mnt, dir))};const t=(k)=>{const s=process.hrtime.bigint();for(let i=0;i<${n};i++)fs.readFileSync(d+'/f'+i+'.h');return Number(process.hrtime.bigint()-s)/1e3/${n}};const cold=t();const warm=t();console.log(JSON.stringify({cold,warm}))`;
      const r = await exe(process.execPath, ['-e', script]);
      assert.equal(r.code, 0, r.stderr);
      const { cold, warm } = JSON.parse(r.stdout) as { cold: number; warm: number };
      console.log(`# FUSE small-file open+read: first ${cold.toFixed(0)} µs/file (incl. fetch over IPC), again ${warm.toFixed(0)} µs/file`);
      assert.ok(warm < 20_000);
    } finally {
      await m.close();
    }
  });

  it('unmounts on close() even while a process holds a file open', async () => {
    const { root } = await makeProject();
    const client = new DiskClient();
    const { m, mnt } = await startMount(client, [root]);
    // cd inside the shell: spawn() with a cwd in the mount would block this process (which answers the
    // mount's queries) in fork+chdir before exec, a deadlock.
    const holder = spawn('sh', ['-c', `cd ${path.join(mnt, root)} && exec 3< README && echo open && exec sleep 30`], { stdio: ['ignore', 'pipe', 'ignore'] });
    try {
      await new Promise<void>((resolve) => holder.stdout.once('data', () => resolve()));
      assert.ok(await mounted(mnt));
      await m.close();
      assert.equal(await mounted(mnt), false, 'no longer in /proc/mounts');
      await m.close(); // idempotent
    } finally {
      holder.kill('SIGKILL');
    }
  });

  it('fails to start on a mountpoint that is already mounted, leaving the first mount alone', async () => {
    const { root } = await makeProject();
    const client = new DiskClient();
    const { m, mnt } = await startMount(client, [root]);
    try {
      await assert.rejects(
        FuseMount.start({ mountpoint: mnt, scratchDir: tmpDir(), roots: [root], mappings: [], uid: 0, gid: 0, query: client.query, fetch: client.fetch }),
        /FUSE/,
      );
      assert.equal(await ok(`cat ${path.join(mnt, root, 'README')}`), 'hello from the client\n');
    } finally {
      await m.close();
    }
  });

  it('cleans up after a helper killed with SIGKILL', async () => {
    const { root } = await makeProject();
    const client = new DiskClient();
    const { m, mnt } = await startMount(client, [root]);
    assert.equal(await ok(`cat ${path.join(mnt, root, 'README')}`), 'hello from the client\n');
    process.kill(m.pid!, 'SIGKILL');
    await assert.rejects(m.changes(), /FUSE helper exited|FUSE mount is gone/);
    const r = await sh(`cat ${path.join(mnt, root, 'README')}`);
    assert.notEqual(r.code, 0, 'the orphaned mount fails instead of hanging');
    await m.close();
    assert.equal(await mounted(mnt), false);
  });
});
