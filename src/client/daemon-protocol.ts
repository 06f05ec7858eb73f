import { createHash } from 'node:crypto';
import { lstat, mkdir } from 'node:fs/promises';
import type { Socket } from 'node:net';
import os from 'node:os';
import path from 'node:path';

// Only node: modules here: `repr exec` and `repr cc` load this on every
// command, and grpc-js alone would add tens of milliseconds to each.

/**
 * A frame is a 4-byte big-endian length and that many bytes of JSON. A
 * request is small (argv, env, cwd); one bigger than this is refused before
 * it is read whole, so a stray writer cannot make the daemon buffer without
 * bound.
 */
export const MAX_REQUEST_BYTES = 1024 * 1024;
/** Replies carry output chunks; the daemon splits them well below this. */
export const MAX_REPLY_BYTES = 16 * 1024 * 1024;

/** What a local client asks the daemon. */
export type DaemonRequest =
  | {
      op: 'exec';
      argv: string[];
      cwd: string;
      /** Directories the command sees; none means the working directory. */
      roots: string[];
      env: { name: string; value: string }[];
      platform: { name: string; value: string }[];
      timeoutMs: number;
    }
  /** Sent on the same connection after `exec`: stop the run, write nothing back; the exit code is the signal's (SIGINT when not given). */
  | { op: 'cancel'; signal?: 'SIGINT' | 'SIGTERM' }
  | { op: 'status' }
  | { op: 'stop' };

export interface DaemonStatus {
  pid: number;
  servers: string[];
  startedAt: number;
  idleTimeoutMs: number;
  /** Runs in flight now, and finished since start. */
  running: number;
  runs: number;
  failed: number;
  /** Questions the servers asked about files, summed over every run. */
  queries: number;
  mappedHits: number;
  /** Blobs and bytes uploaded to the CAS since start: each blob at most once. */
  uploadedBlobs: number;
  uploadedBytes: number;
  hashed: number;
  /** Commands whose record of touched paths the daemon holds. */
  records: number;
  /** Runs started per executor, as the server named it. */
  executors: Record<string, number>;
}

/** What the daemon answers. An exec gets output frames, then one `exit`. */
export type DaemonReply =
  | { out: 1 | 2; data: string }
  | { exit: number; error?: string; interrupted?: boolean }
  | { status: DaemonStatus }
  | { stopped: true }
  | { refused: string };

/** What picks a daemon: a user has one per server spec and the settings that change where runs go. */
export interface DaemonKey {
  server: string;
  cas?: string;
  instance: string;
  token?: string;
  tls?: { caFile?: string; certFile?: string; keyFile?: string };
}

/**
 * Where the daemons of this user keep their sockets: $XDG_RUNTIME_DIR/repr
 * (a per-user tmpfs the system already makes 0700), else /tmp/repr-UID.
 * Either is made 0700 and checked to be this user's: Node cannot read
 * SO_PEERCRED, so the directory's permissions are what keep other users out.
 */
export function daemonDir(env: NodeJS.ProcessEnv = process.env): string {
  const uid = process.getuid?.() ?? 0;
  return env.XDG_RUNTIME_DIR ? path.join(env.XDG_RUNTIME_DIR, 'repr') : path.join(os.tmpdir(), `repr-${uid}`);
}

/** The socket of the daemon for `key`: its name is a hash, so the token is not on disk in the clear. */
export function socketPath(key: DaemonKey, env: NodeJS.ProcessEnv = process.env): string {
  const id = createHash('sha256')
    .update(JSON.stringify([key.server, key.cas ?? '', key.instance, key.token ?? '', key.tls?.caFile ?? '', key.tls?.certFile ?? '', key.tls?.keyFile ?? '']))
    .digest('hex')
    .slice(0, 16);
  return path.join(daemonDir(env), `daemon-${id}.sock`);
}

export function writeFrame(socket: Socket, msg: DaemonRequest | DaemonReply): boolean {
  const body = Buffer.from(JSON.stringify(msg));
  const head = Buffer.alloc(4);
  head.writeUInt32BE(body.length);
  return socket.write(Buffer.concat([head, body]));
}

/**
 * Splits a byte stream into frames. A frame announced bigger than `max`, or
 * one that is not JSON, fails `onBad` and nothing more is read.
 */
export function frameReader<T>(max: number, onFrame: (msg: T) => void, onBad: (why: string) => void): (chunk: Buffer) => void {
  let buf: Buffer = Buffer.alloc(0);
  let dead = false;
  return (chunk) => {
    if (dead) return;
    buf = buf.length === 0 ? chunk : Buffer.concat([buf, chunk]);
    while (buf.length >= 4) {
      const len = buf.readUInt32BE(0);
      if (len > max) {
        dead = true;
        onBad(`a message of ${len} bytes is over the limit of ${max}`);
        return;
      }
      if (buf.length < 4 + len) return;
      const body = buf.subarray(4, 4 + len);
      buf = buf.subarray(4 + len);
      let msg: T;
      try {
        msg = JSON.parse(body.toString('utf8')) as T;
      } catch {
        dead = true;
        onBad('a message is not JSON');
        return;
      }
      onFrame(msg);
    }
  };
}

/**
 * Makes the socket directory, or checks the one there: a directory this
 * user owns that nobody else can enter. Node cannot read a connection's
 * SO_PEERCRED, so this is what keeps other users from connecting to a
 * daemon, and clients check it too, so that they never send a command and
 * its environment to a socket someone else made.
 */
export async function privateDir(dir: string): Promise<void> {
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const st = await lstat(dir);
  const uid = process.getuid?.();
  if (!st.isDirectory() || (uid !== undefined && st.uid !== uid) || (st.mode & 0o077) !== 0) {
    throw new Error(
      `${dir} must be a directory only this user can enter (it is mode ${(st.mode & 0o777).toString(8)}, owner uid ${st.uid}); remove it, or set XDG_RUNTIME_DIR to a private directory`,
    );
  }
}
