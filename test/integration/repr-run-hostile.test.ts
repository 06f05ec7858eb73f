import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readdirSync, readFileSync, readlinkSync, symlinkSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { credentials } from '@grpc/grpc-js';
import { computeDigest, SHA256 } from '../../src/common/digest.js';
import { Code } from '../../src/common/errors.js';
import { FileSource } from '../../src/client/file-source.js';
import { ReapiClient } from '../../src/reapi/reapi-client.js';
import {
  type ClientMessage,
  type Node,
  Node_Kind,
  type NodeQuery,
  type RunFinished,
  type RunRequest,
  RunnerClient,
  type ServerMessage,
} from '../../src/proto/repr/run/v1/run.js';
import type { ReprServer } from '../../src/server/server.js';
import { startInProcess } from '../../support/servers.js';
import { tmpDir } from '../../support/tmp.js';

/*
 * `repr run` against a client that does not play by the rules: it leaves
 * questions unanswered, sends requests the CLI never would, and describes
 * its files in ways meant to reach the worker's own. The server runs in this
 * process with one built-in executor, so a run that does not give its
 * executor back makes the next one wait.
 */

/** What the hostile client does with a question: an answer, or nothing at all. */
type Answerer = (q: NodeQuery) => Promise<Node | 'hang'>;

class HostileSession {
  private readonly client: InstanceType<typeof RunnerClient>;
  private readonly call;
  private readonly finished = new Map<string, (f: RunFinished) => void>();
  private readonly answerers = new Map<string, Answerer>();
  readonly received: ServerMessage[] = [];

  constructor(address: string) {
    this.client = new RunnerClient(address, credentials.createInsecure());
    this.call = this.client.session();
    this.call.on('data', (m: ServerMessage) => {
      this.received.push(m);
      if (m.finished) this.finished.get(m.finished.runId)?.(m.finished);
      const q = m.query;
      const answer = q && this.answerers.get(q.runId);
      if (q && answer) {
        answer(q).then(
          (node) => node !== 'hang' && this.send({ reply: { runId: q.runId, queryId: q.queryId, node, error: undefined } }),
          (e: unknown) =>
            this.send({
              reply: {
                runId: q.runId,
                queryId: q.queryId,
                node: undefined,
                error: { code: Code.PERMISSION_DENIED, message: (e as Error).message, details: [] },
              },
            }),
        );
      }
    });
    this.call.on('error', () => undefined);
  }

  send(m: ClientMessage): void {
    this.call.write(m);
  }

  run(partial: Partial<RunRequest> & { runId: string }, answer: Answerer = async () => 'hang'): Promise<RunFinished> {
    const done = new Promise<RunFinished>((resolve) => this.finished.set(partial.runId, resolve));
    this.answerers.set(partial.runId, answer);
    this.send({
      run: {
        arguments: ['/bin/true'],
        environmentVariables: [],
        workingDirectory: '/nowhere',
        roots: ['/nowhere'],
        mappings: [],
        instanceName: '',
        digestFunction: SHA256.value,
        platform: [],
        timeoutMs: 0,
        ...partial,
      },
    });
    return done;
  }

  output(runId: string, stream: 0 | 1): string {
    return Buffer.concat(
      this.received.filter((m) => m.output?.runId === runId && m.output.stream === stream).map((m) => Buffer.from(m.output!.data)),
    ).toString();
  }

  queries(runId: string): NodeQuery[] {
    return this.received.filter((m) => m.query?.runId === runId).map((m) => m.query!);
  }

  close(): void {
    this.call.end();
    this.client.close();
  }
}

const dirNode = (listed = false): Node => ({
  kind: Node_Kind.DIRECTORY,
  digest: undefined,
  size: 0,
  executable: false,
  symlinkTarget: '',
  mtimeMs: 0,
  listed,
  entries: [],
  mode: 0,
});
const symlinkNode = (target: string): Node => ({
  kind: Node_Kind.SYMLINK,
  digest: undefined,
  size: 0,
  executable: false,
  symlinkTarget: target,
  mtimeMs: 0,
  listed: false,
  entries: [],
  mode: 0,
});

/** Resolves with the run, or rejects if it takes longer than `ms`: a held executor shows up here. */
function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([p, new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`${what} took over ${ms} ms`)), ms)))]).finally(() =>
    clearTimeout(timer),
  );
}

/** Mounts whose mount point is under `dir`, from this process's mount table. */
function mountsUnder(dir: string): string[] {
  return readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .map((l) => l.split(' ')[4] ?? '')
    .filter((m) => m.startsWith(dir));
}

/**
 * Run directories under `dir` that hold a mount (the FUSE tree, the overlay
 * over it). Between runs there is one: the directory made ahead for the next.
 */
function mountedRunDirs(dir: string): string[] {
  return [...new Set(mountsUnder(dir).map((m) => path.dirname(m)))];
}

/** This process's children that hold /dev/fuse open: the helpers serving a mount now. */
function fuseHelpers(): number[] {
  const out: number[] = [];
  for (const name of readdirSync('/proc')) {
    const pid = Number(name);
    if (!Number.isInteger(pid)) continue;
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
      if (Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]) !== process.pid) continue;
      if (readdirSync(`/proc/${pid}/fd`).some((fd) => readlinkSync(`/proc/${pid}/fd/${fd}`) === '/dev/fuse')) out.push(pid);
    } catch {
      /* gone meanwhile */
    }
  }
  return out;
}

async function until(cond: () => boolean, ms: number, what: string): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe('repr run against a hostile client', () => {
  let server: ReprServer;
  let dataDir: string;
  let s: HostileSession;
  let files: FileSource;
  let cas: ReapiClient;
  let proj: string;
  /** A directory of the worker's host that no run may see or change. */
  let hostDir: string;

  /** Answers as the real client does, from this machine's disk. */
  const honest: (roots: string[]) => Answerer = (roots) => (q) => files.answer(q.path, q.list, roots);

  before(async () => {
    dataDir = tmpDir('repr-hostile-');
    server = await startInProcess({ dataDir, instanceNames: [''], execution: { executors: 1, defaultTimeoutSeconds: 2, maxTimeoutSeconds: 3 } });
    s = new HostileSession(server.address);
    cas = new ReapiClient({ target: server.address, instanceName: '', digestFunction: SHA256 });
    files = new FileSource(cas, SHA256);
    const base = tmpDir('repr-hostile-proj-');
    proj = path.join(base, 'p');
    mkdirSync(proj);
    writeFileSync(path.join(proj, 'f.txt'), 'data\n');
    hostDir = path.join(base, 'host');
    mkdirSync(path.join(hostDir, 'sub'), { recursive: true });
    writeFileSync(path.join(hostDir, 'secret'), 'TOPSECRET\n');
  });

  after(async () => {
    s.close();
    cas.close();
    await server.stop();
  });

  /** The executor is free and works: a plain run finishes at once. */
  const executorIsFree = async (runId: string) => {
    const f = await within(
      s.run({ runId, roots: [proj], workingDirectory: proj, arguments: ['/bin/cat', 'f.txt'], timeoutMs: 20_000 }, honest([proj])),
      15_000,
      `run ${runId} after a hung one`,
    );
    assert.equal(f.status?.code ?? Code.OK, Code.OK, f.status?.message);
    assert.equal(f.exitCode, 0, s.output(runId, 1));
    assert.equal(s.output(runId, 0), 'data\n');
    // The run's answer comes before its mounts go: they go soon after.
    await until(() => mountedRunDirs(dataDir).length <= 1, 10_000, 'the last run to unmount').catch(() => undefined);
    assert.ok(mountedRunDirs(dataDir).length <= 1, `a run left a mount behind: ${mountsUnder(dataDir).join(', ')}`);
  };

  const expectTimedOut = async (runId: string, req: Partial<RunRequest>, limitMs: number) => {
    const t = Date.now();
    const f = await within(
      s.run({ runId, roots: [proj], workingDirectory: proj, mappings: [{ path: proj, node: dirNode() }], ...req }),
      limitMs + 8_000,
      `run ${runId}`,
    );
    const took = Date.now() - t;
    assert.ok(s.queries(runId).length > 0, 'the command never asked the client anything');
    assert.equal(f.status?.code, Code.DEADLINE_EXCEEDED, f.status?.message);
    assert.ok(took < limitMs + 5_000, `the run took ${took} ms under a ${limitMs} ms timeout`);
    assert.deepEqual(f.changes, []);
  };

  it('kills a command blocked on an unanswered question at its timeout and frees the executor', async () => {
    await expectTimedOut('hang-read', { arguments: ['/bin/cat', 'f.txt'], timeoutMs: 1500 }, 1500);
    await executorIsFree('after-hang-read');
  });

  it('applies the server default timeout to a command blocked on a listing', async () => {
    await expectTimedOut('hang-list', { arguments: ['/bin/ls', proj], timeoutMs: 0 }, 2000);
    await executorIsFree('after-hang-list');
  });

  it('caps a long requested timeout at the server maximum', async () => {
    await expectTimedOut('hang-max', { arguments: ['/bin/sh', '-c', 'cat f.txt & cat f.txt; wait'], timeoutMs: 3_600_000 }, 3000);
    await executorIsFree('after-hang-max');
  });

  it("frees the executor even when the mount's own helper stops answering", async () => {
    // The question reaches the client, then the helper process serving the
    // mount freezes: answering the question no longer frees the command.
    const runId = 'hang-helper';
    const done = s.run({
      runId,
      roots: [proj],
      workingDirectory: proj,
      mappings: [{ path: proj, node: dirNode() }],
      arguments: ['/bin/cat', 'f.txt'],
      timeoutMs: 1500,
    });
    await until(() => s.queries(runId).length > 0, 10_000, 'the first question');
    const stopped = fuseHelpers();
    assert.ok(stopped.length > 0, 'no FUSE helper found');
    for (const pid of stopped) process.kill(pid, 'SIGSTOP');
    try {
      const t = Date.now();
      const f = await within(done, 15_000, runId);
      assert.equal(f.status?.code, Code.DEADLINE_EXCEEDED, f.status?.message);
      assert.ok(Date.now() - t < 10_000);
    } finally {
      for (const pid of stopped) {
        try {
          process.kill(pid, 'SIGCONT');
        } catch {
          /* killed, as it should be */
        }
      }
    }
    await executorIsFree('after-hang-helper');
  });

  it('refuses a working directory outside the roots, naming both', async () => {
    const f = await within(
      s.run({ runId: 'cwd-out', roots: [proj], workingDirectory: '/root', arguments: ['/bin/true'], timeoutMs: 20_000 }, honest([proj])),
      15_000,
      'cwd-out',
    );
    assert.equal(f.status?.code, Code.INVALID_ARGUMENT, f.status?.message);
    assert.match(f.status!.message, /working_directory \/root/);
    assert.ok(f.status!.message.includes(proj), f.status!.message);
  });

  it('does not let a root described as a symlink show the worker its own files', async () => {
    const roots = [proj];
    const lie: Answerer = async (q) => (q.path === proj ? symlinkNode(hostDir) : honest(roots)(q));
    const cmd = `cat ${proj}/secret; ls ${proj}; echo pwned > ${proj}/pwned`;
    for (const [runId, mappings] of [
      ['root-symlink-query', []],
      ['root-symlink-mapping', [{ path: proj, node: symlinkNode(hostDir) }]],
    ] as const) {
      const f = await within(
        s.run({ runId, roots, workingDirectory: proj, mappings: [...mappings], arguments: ['/bin/sh', '-c', cmd], timeoutMs: 20_000 }, lie),
        15_000,
        runId,
      );
      assert.doesNotMatch(s.output(runId, 0), /TOPSECRET|secret/);
      assert.ok(!existsSync(path.join(hostDir, 'pwned')), 'the command wrote into a directory of the worker');
      assert.ok(
        f.changes.every((c) => !c.path.endsWith('/pwned') && !c.path.endsWith('/secret')),
        JSON.stringify(f.changes),
      );
    }
  });

  it("takes a listing's digests as claims the CAS must back: a lie costs the liar its own read, never shows the worker's files", async () => {
    const runId = 'lying-listing';
    const roots = [proj];
    const lied = path.join(proj, 'lied');
    const own = computeDigest(SHA256, Buffer.from('data\n'));
    await files.answer(path.join(proj, 'f.txt'), false, roots);
    const file = (hash: string, sizeBytes: number): Node => ({ ...dirNode(), kind: Node_Kind.FILE, digest: { hash, sizeBytes }, size: sizeBytes });
    const listing: Node = {
      ...dirNode(true),
      entries: [
        // Content only the worker has: not in the CAS.
        { name: 'secret.txt', node: file(computeDigest(SHA256, Buffer.from('TOPSECRET\n')).hash, 10) },
        // The client's own blob under another name: it only fools the client's own command.
        { name: 'mine.txt', node: file(own.hash, own.sizeBytes) },
        // A real hash with a size that is not its blob's.
        { name: 'short.txt', node: file(own.hash, 3) },
      ],
    };
    const lie: Answerer = async (q) => (q.path === lied ? (q.list ? listing : dirNode()) : honest(roots)(q));
    const cmd = 'cd lied && ls && for f in secret.txt short.txt mine.txt; do cat $f; echo "$f $?"; done';
    const f = await within(s.run({ runId, roots, workingDirectory: proj, arguments: ['/bin/sh', '-c', cmd], timeoutMs: 20_000 }, lie), 15_000, runId);
    assert.equal(f.status?.code ?? Code.OK, Code.OK, f.status?.message);
    assert.equal(s.output(runId, 0), 'mine.txt\nsecret.txt\nshort.txt\nsecret.txt 1\nshort.txt 1\ndata\nmine.txt 0\n');
    assert.match(s.output(runId, 1), /secret.txt: Input\/output error/);
  });

  it('reports symlinks the command made as symlinks, never what they point to', async () => {
    const runId = 'made-links';
    const roots = [proj];
    const cmd = [
      'ln -s /etc out',
      'echo x > out/evil 2>/dev/null',
      'mkdir d && echo y > d/inner',
      'rm -r d && ln -s /proc/self d',
      `ln -s ${hostDir} host`,
      'cat host/secret 2>/dev/null',
      'true',
    ].join('; ');
    const f = await within(s.run({ runId, roots, workingDirectory: proj, arguments: ['/bin/sh', '-c', cmd], timeoutMs: 20_000 }, honest(roots)), 15_000, runId);
    assert.equal(f.status?.code ?? Code.OK, Code.OK, f.status?.message);
    const byPath = new Map(f.changes.map((c) => [c.path.slice(proj.length + 1), c.node!]));
    assert.equal(byPath.get('out')?.kind, Node_Kind.SYMLINK);
    assert.equal(byPath.get('out')?.symlinkTarget, '/etc');
    assert.equal(byPath.get('d')?.kind, Node_Kind.SYMLINK);
    assert.equal(byPath.get('d')?.symlinkTarget, '/proc/self');
    assert.equal(byPath.get('host')?.kind, Node_Kind.SYMLINK);
    assert.deepEqual(
      [...byPath.keys()].filter((p) => p.includes('/')),
      [],
      JSON.stringify([...byPath.keys()]),
    );
    assert.doesNotMatch(s.output(runId, 0), /TOPSECRET/);
  });

  it('does not look through a symlink of the client into the worker when reading back changes', async () => {
    // On the client `link` points at a directory that exists on the worker
    // too; the command replaces it with a directory of its own.
    const runId = 'lower-link';
    const roots = [proj];
    symlinkSync(hostDir, path.join(proj, 'link'));
    const f = await within(
      s.run(
        { runId, roots, workingDirectory: proj, arguments: ['/bin/sh', '-c', 'rm link && mkdir -p link/sub link/other'], timeoutMs: 20_000 },
        honest(roots),
      ),
      15_000,
      runId,
    );
    assert.equal(f.status?.code ?? Code.OK, Code.OK, f.status?.message);
    assert.equal(f.exitCode, 0, s.output(runId, 1));
    const dirs = f.changes.filter((c) => c.node?.kind === Node_Kind.DIRECTORY).map((c) => c.path.slice(proj.length + 1));
    assert.deepEqual(dirs.sort(), ['link', 'link/other', 'link/sub']);
  });
});
