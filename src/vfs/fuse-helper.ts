/**
 * The FUSE helper: a child process (forked by FuseMount with an IPC channel,
 * `serialization: 'advanced'`) that mounts the run's file tree and answers
 * FUSE ops from a FuseTree. It lives in its own process because a process
 * that touches its own mount with synchronous fs calls deadlocks; here the
 * event loop only ever waits on the parent (over IPC) and on host files
 * outside the mount (scratch and fetched blobs), always asynchronously.
 */
import { execFile } from 'node:child_process';
import { closeSync, fdatasyncSync, openSync, readSync, writeSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import os from 'node:os';
import { FuseTree, TreeError, type Attr, type TreeNode } from './fuse-tree.js';
import type { FromHelper, HelperConfigure, HelperInit, ToHelper } from './fuse-protocol.js';
import type { VNode } from './vfs.js';

// ---- fuse-native, which ships no types ----------------------------------

type Cb<T = void> = (err: number, value?: T) => void;
interface FuseInstance {
  mount(cb: (err: Error | null) => void): void;
  unmount(cb: (err: Error | null) => void): void;
}
type FuseCtor = new (mnt: string, ops: Record<string, unknown>, opts: Record<string, unknown>) => FuseInstance;
const Fuse = createRequire(import.meta.url)('fuse-native') as FuseCtor;

const E = os.constants.errno;
/** Kernel entry/attr cache lifetime. Every change goes through this mount, so the kernel's cache stays right. */
const CACHE_SECONDS = 60;

/**
 * A descriptor of the host file behind a node (a cache or scratch file,
 * never on this mount). Used with synchronous calls: they take a few
 * microseconds on a local file, where a thread-pool round trip per read
 * would cost more than the read, and the pool must stay free for the
 * parent's answers.
 */
interface HostFile {
  fd: number;
  path: string;
  writable: boolean;
}

/** Host descriptors kept open at once; the least recently opened is closed beyond this. */
const MAX_OPEN_HOST_FILES = 512;

function send(m: FromHelper): void {
  if (process.connected) process.send!(m, undefined, undefined, () => {});
}

function log(level: 'debug' | 'warn', msg: string): void {
  send({ t: 'log', level, msg });
}

/** FUSE's negative errno for anything thrown; unexpected errors are logged and become EIO. */
function errnoOf(err: unknown): number {
  if (err instanceof TreeError) {
    if (err.errno === 'EIO') log('warn', err.message);
    return -E[err.errno];
  }
  const code = (err as { code?: unknown })?.code;
  if (typeof code === 'string' && code in E) return -E[code as keyof typeof E];
  log('warn', `fuse op failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
  return -E.EIO;
}

/** Runs an async op and signals FUSE: `0, value` on success, a negative errno on failure. */
function reply<T>(cb: Cb<T>, f: () => Promise<T>): void {
  f().then(
    (v) => cb(0, v),
    (e: unknown) => cb(errnoOf(e)),
  );
}

function toStat(a: Attr): Record<string, number> {
  return { ...a, blksize: 4096, blocks: Math.ceil(a.size / 512) };
}

/**
 * fuse-native passes utimens the access time twice (its C glue copies
 * `atime` into both arguments), so both times arrive as the atime. When the
 * caller asked for "now" (UTIME_NOW, as `touch` does), libfuse hands over the
 * marker nanoseconds, which fuse-native turns into `seconds*1000 + 1073`.
 */
function utimeOf(ms: number, now: number): number {
  return ms % 1000 === 73 && Math.abs(ms - 1073 - now) < 10_000 ? now : ms;
}

/** One mount served by this process; the process serves one after another (see FuseMount.close). */
interface Session {
  onMessage(m: ToHelper): void;
  /** Unmounts; then the process exits, or (`idle`) reports 'closed' and waits for the next mount. */
  shutdown(why: string, then: 'exit' | 'idle'): void;
}

function main(init: HelperInit): Session {
  const pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  let seq = 0;
  const ask = <T>(m: { t: 'query'; path: string; list: boolean } | { t: 'fetch'; hash: string; size: number }): Promise<T> =>
    new Promise<T>((resolve, reject) => {
      const id = ++seq;
      pending.set(id, { resolve: resolve as (v: unknown) => void, reject });
      send({ ...m, id });
    });

  // Mounted ahead of its run (see FuseMount.prepare): the tree comes with the
  // run, and an op that arrives before it waits rather than be answered from
  // nothing, which the kernel would then cache (negative entries for a minute).
  let tree!: FuseTree;
  let configure!: (c: HelperConfigure) => void;
  const configured = new Promise<void>((resolve) => {
    configure = (c) => {
      tree = new FuseTree({
        roots: c.roots,
        mappings: c.mappings,
        uid: init.uid,
        gid: init.gid,
        scratchDir: init.scratchDir,
        query: (path, list) => ask<VNode>({ t: 'query', path, list }),
        fetch: (hash, size) => ask<string>({ t: 'fetch', hash, size }),
      });
      resolve();
    };
  });
  const gate =
    <A extends unknown[]>(op: (...args: A) => void) =>
    (...args: A): void => {
      if (tree) op(...args);
      else void configured.then(() => op(...args));
    };

  // No open/release/flush handlers: libfuse answers those in C, and each
  // one routed to JS costs a thread hop (~0.1 ms). A compiler opens every
  // header, so per-open work dominated builds. Reads and writes find their
  // node by path instead and share one host descriptor per node.
  const hostFiles = new Map<TreeNode, HostFile>();
  const hostFile = async (p: string, write: boolean): Promise<{ node: TreeNode; fd: number }> => {
    const { node, hostPath } = write ? await tree.openWrite(p, false) : await tree.openRead(p);
    let h = hostFiles.get(node);
    // A node copied up since its descriptor was opened now lives in scratch.
    if (h && (h.path !== hostPath || (write && !h.writable))) {
      closeSync(h.fd);
      hostFiles.delete(node);
      h = undefined;
    }
    if (!h) {
      h = { fd: openSync(hostPath, write ? 'r+' : 'r'), path: hostPath, writable: write };
      hostFiles.set(node, h);
      if (hostFiles.size > MAX_OPEN_HOST_FILES) {
        const [oldNode, old] = hostFiles.entries().next().value as [TreeNode, HostFile];
        closeSync(old.fd);
        hostFiles.delete(oldNode);
      }
    }
    return { node, fd: h.fd };
  };

  const ops = {
    getattr: (p: string, cb: Cb<Record<string, number>>) => reply(cb, async () => toStat(await tree.getattr(p))),
    access: (p: string, _mode: number, cb: Cb) => reply(cb, () => tree.access(p)),
    readdir: (p: string, cb: Cb<string[]>) => reply(cb, async () => ['.', '..', ...(await tree.readdir(p))]),
    readlink: (p: string, cb: Cb<string>) => reply(cb, () => tree.readlink(p)),
    create: (p: string, mode: number, cb: Cb<number>) =>
      reply(cb, async () => {
        await tree.create(p, mode);
        return 0;
      }),
    read: (p: string, _fh: number, buf: Buffer, len: number, pos: number, cb: (n: number) => void) => {
      // The buffer is FUSE's own memory, valid only until cb: read straight into it.
      hostFile(p, false).then(
        ({ fd }) => cb(readSync(fd, buf, 0, len, pos)),
        (e: unknown) => cb(errnoOf(e)),
      );
    },
    write: (p: string, _fh: number, buf: Buffer, len: number, pos: number, cb: (n: number) => void) => {
      hostFile(p, true).then(
        ({ node, fd }) => {
          const bytesWritten = writeSync(fd, buf, 0, len, pos);
          tree.noteWrite(node, pos + bytesWritten);
          cb(bytesWritten);
        },
        (e: unknown) => cb(errnoOf(e)),
      );
    },
    fsync: (p: string, _datasync: number, _fh: number, cb: Cb) =>
      reply(cb, async () => {
        const n = await tree.resolve(p);
        const h = hostFiles.get(n);
        if (h?.writable) fdatasyncSync(h.fd);
      }),
    truncate: (p: string, size: number, cb: Cb) => reply(cb, () => tree.truncate(p, size)),
    // Without open handlers a truncating open arrives here too (libfuse does not ask for atomic O_TRUNC).
    ftruncate: (p: string, _fh: number, size: number, cb: Cb) => reply(cb, () => tree.truncate(p, size)),
    unlink: (p: string, cb: Cb) => reply(cb, () => tree.unlink(p)),
    mkdir: (p: string, _mode: number, cb: Cb) => reply(cb, () => tree.mkdir(p)),
    rmdir: (p: string, cb: Cb) => reply(cb, () => tree.rmdir(p)),
    rename: (src: string, dst: string, cb: Cb) => reply(cb, () => tree.rename(src, dst)),
    // fuse-native passes libfuse's (linkname, path): the target first, then the new link.
    symlink: (target: string, p: string, cb: Cb) => reply(cb, () => tree.symlink(target, p)),
    link: (_src: string, _dst: string, cb: Cb) => cb(-E.ENOTSUP),
    chmod: (p: string, mode: number, cb: Cb) => reply(cb, () => tree.chmod(p, mode)),
    // Every node belongs to the sandbox user; ownership is not part of what the client keeps.
    chown: (_p: string, _uid: number, _gid: number, cb: Cb) => cb(0),
    utimens: (p: string, atime: number, mtime: number, cb: Cb) =>
      reply(cb, () => {
        const now = Date.now();
        return tree.utimens(p, utimeOf(atime, now), utimeOf(mtime, now));
      }),
  };
  const gated: Record<string, unknown> = Object.fromEntries(Object.entries(ops).map(([name, op]) => [name, gate(op as (...a: unknown[]) => void)]));
  // The same for every tree, and asked by the kernel when the overlay is mounted over this one.
  gated.statfs = (_p: string, cb: Cb<Record<string, number>>) =>
    cb(0, {
      bsize: 4096,
      frsize: 4096,
      blocks: 1 << 28,
      bfree: 1 << 27,
      bavail: 1 << 27,
      files: 1 << 24,
      ffree: 1 << 23,
      favail: 1 << 23,
      fsid: 0,
      flag: 0,
      namemax: 255,
    });

  const fuse = new Fuse(init.mountpoint, gated, {
    allowOther: true,
    // The kernel checks modes against uid/gid, so `test -w` and friends answer as on a disk.
    defaultPermissions: true,
    entryTimeout: CACHE_SECONDS,
    attrTimeout: CACHE_SECONDS,
    // fuse-native passes only options it knows; these ride along in fsname's comma-separated list:
    // big_writes lifts the 4 KiB cap per write op, negative_timeout lets the kernel cache ENOENT.
    fsname: `repr,big_writes,kernel_cache,negative_timeout=${CACHE_SECONDS}`,
    // Its default answers ETIMEDOUT after 15 s; a slow fetch of a large input must wait instead.
    timeout: false,
  });

  let state: 'mounting' | 'mounted' | 'closing' = 'mounting';
  let stacked: string | undefined;
  const shutdown = (why: string, then: 'exit' | 'idle'): void => {
    if (state === 'closing') return;
    const wasMounted = state === 'mounted';
    state = 'closing';
    log('debug', `unmounting: ${why}`);
    for (const p of pending.values()) p.reject(new Error('FUSE helper is closing'));
    pending.clear();
    void (async () => {
      for (const h of hostFiles.values()) {
        try {
          closeSync(h.fd);
        } catch {
          /* already closed */
        }
      }
      // Asked, the parent has removed the overlay already; otherwise it would
      // stay, over a dead mount, where nobody can remove the directory.
      if (stacked && why !== 'asked to close') await new Promise<void>((resolve) => execFile('umount', ['-l', stacked!], () => resolve()));
      const unmounted = !wasMounted || (await new Promise<boolean>((resolve) => fuse.unmount((err) => resolve(!err))));
      // Nothing of this mount stays in the process but what the garbage
      // collector takes: the next mount starts from a new tree. One that did
      // not unmount cleanly ends the process instead.
      if (then === 'idle' && unmounted) {
        session = undefined;
        send({ t: 'closed' });
      } else process.exit(0);
    })();
  };

  const onMessage = (m: ToHelper): void => {
    switch (m.t) {
      case 'answer': {
        const p = pending.get(m.id);
        pending.delete(m.id);
        if (m.ok) p?.resolve(m.value);
        else p?.reject(new Error(m.error));
        break;
      }
      case 'configure':
        if (!tree) configure(m);
        break;
      case 'stacked':
        stacked = m.path;
        break;
      case 'call':
        void configured.then(() => send({ t: 'result', id: m.id, value: m.op === 'changes' ? tree.changes() : tree.report() }));
        break;
    }
  };

  fuse.mount((err) => {
    if (err) {
      send({ t: 'mount-failed', error: err.message });
      process.exit(1);
    }
    if (state !== 'mounting') return;
    state = 'mounted';
    send({ t: 'mounted' });
  });
  return { onMessage, shutdown };
}

/**
 * Calls `gone` once the parent process has died. 'disconnect' alone is not
 * enough: a child the parent was forking at its death (between fork and exec,
 * e.g. stuck in a chdir into this mount) keeps the IPC socket open.
 */
function watchParent(gone: () => void): void {
  const parent = process.ppid;
  const timer = setInterval(() => {
    readFile('/proc/self/stat', 'utf8').then(
      (stat) => {
        // Fields after the command name (which may hold spaces): state, ppid, ...
        const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
        if (ppid !== parent) {
          clearInterval(timer);
          gone();
        }
      },
      () => {},
    );
  }, 1000);
  timer.unref();
}

if (!process.send) {
  console.error('fuse-helper must be forked with an IPC channel');
  process.exit(2);
}
let session: Session | undefined;
const end = (why: string): void => (session ? session.shutdown(why, 'exit') : process.exit(0));
process.on('message', (m: ToHelper) => {
  if (m.t === 'init') session ??= main(m);
  else if (m.t === 'close') {
    if (session) session.shutdown('asked to close', 'idle');
    else send({ t: 'closed' });
  } else session?.onMessage(m);
});
process.on('disconnect', () => end('parent disconnected'));
process.on('SIGTERM', () => end('SIGTERM'));
process.on('SIGINT', () => end('SIGINT'));
watchParent(() => end('parent died'));
process.on('uncaughtException', (err) => {
  log('warn', `FUSE helper crashed: ${err.stack ?? err.message}`);
  end('uncaught exception');
});
