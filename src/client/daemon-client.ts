import { spawn } from 'node:child_process';
import { closeSync, openSync, readFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { type DaemonReply, type DaemonRequest, frameReader, MAX_REPLY_BYTES, privateDir, writeFrame } from './daemon-protocol.js';
import { RUN_FAILED_EXIT } from './exit-codes.js';

// Loaded by every `repr exec` and `repr cc`: node: modules only (see daemon-protocol.ts).

/** How long a client waits for a daemon it started to take connections. */
const START_TIMEOUT_MS = 15_000;

export class DaemonUnreachable extends Error {}
/** The daemon dropped the connection before reading the request (it was stopping): nothing ran, so trying again is safe. */
export class DaemonHungUp extends DaemonUnreachable {}

function connect(socket: string): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const c = net.connect(socket);
    c.once('connect', () => (c.off('error', reject), resolve(c)));
    c.once('error', reject);
  });
}

/** The log a daemon started by a client writes, beside its socket. */
export function daemonLog(socket: string): string {
  return socket.replace(/\.sock$/, '.log');
}

/**
 * A connection to the daemon at `socket`, started (detached, with `start`
 * as its command line) when none answers. Concurrent clients may each
 * start one; all but the first find the socket taken and exit.
 */
export async function connectOrStart(socket: string, start: { command: string; args: string[]; env: NodeJS.ProcessEnv }): Promise<net.Socket> {
  await privateDir(path.dirname(socket));
  try {
    return await connect(socket);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code !== 'ENOENT' && code !== 'ECONNREFUSED') throw e;
  }
  const log = daemonLog(socket);
  const fd = openSync(log, 'a', 0o600);
  const child = spawn(start.command, start.args, { detached: true, stdio: ['ignore', fd, fd], env: start.env });
  closeSync(fd);
  let exited: number | null | undefined;
  child.once('exit', (c) => (exited = c));
  child.unref();
  const deadline = Date.now() + START_TIMEOUT_MS;
  for (let wait = 5; ; wait = Math.min(wait * 2, 100)) {
    try {
      return await connect(socket);
    } catch {
      /* not up yet */
    }
    // Exit 0: another client's daemon won the socket, and will answer in a moment.
    if ((exited !== undefined && exited !== 0) || Date.now() > deadline) {
      const tail = readFileSync(log, 'utf8').trim().split('\n').slice(-1)[0] ?? '';
      throw new DaemonUnreachable(`the repr daemon did not start${tail ? `: ${tail}` : ''} (log: ${log})`);
    }
    await new Promise((r) => setTimeout(r, wait));
  }
}

/** Sends one request and collects the replies until the daemon closes the connection. */
export function request(c: net.Socket, req: DaemonRequest, onReply: (r: DaemonReply) => void): Promise<void> {
  return new Promise((resolve, reject) => {
    c.on(
      'data',
      frameReader<DaemonReply>(MAX_REPLY_BYTES, onReply, (why) => {
        c.destroy();
        reject(new Error(`the repr daemon sent a bad reply: ${why}`));
      }),
    );
    c.once('error', reject);
    c.once('close', () => resolve());
    writeFrame(c, req);
  });
}

/**
 * Runs one command through the daemon: its output goes to `out`/`err` as it
 * comes, its changes are written back before the exit code arrives. On
 * SIGINT or SIGTERM the run is cancelled and the exit code is 130 or 143 once the
 * daemon has confirmed that nothing will be written back.
 */
export async function execThroughDaemon(
  c: net.Socket,
  req: Extract<DaemonRequest, { op: 'exec' }>,
  out: NodeJS.WritableStream,
  err: NodeJS.WritableStream,
): Promise<number> {
  let result: { exit: number; error?: string } | undefined;
  let replies = 0;
  const onSigint = () => writeFrame(c, { op: 'cancel', signal: 'SIGINT' });
  const onSigterm = () => writeFrame(c, { op: 'cancel', signal: 'SIGTERM' });
  process.on('SIGINT', onSigint);
  process.on('SIGTERM', onSigterm);
  try {
    await request(c, req, (r) => {
      replies++;
      if ('out' in r) (r.out === 2 ? err : out).write(Buffer.from(r.data, 'base64'));
      else if ('exit' in r) result = r;
      else if ('refused' in r) result = { exit: RUN_FAILED_EXIT, error: `the repr daemon refused the command: ${r.refused}` };
    });
  } catch (e) {
    // Dropped before a word: the daemon was stopping (idle) as we dialled, and never read the request.
    if (replies === 0 && isHangUp(e)) throw new DaemonHungUp(`the repr daemon hung up before answering (${(e as Error).message})`);
    throw e;
  } finally {
    process.off('SIGINT', onSigint);
    process.off('SIGTERM', onSigterm);
  }
  if (!result) return fail(err, 'the repr daemon closed the connection before the command finished (see repr daemon status)');
  if (result.error) return fail(err, result.error, result.exit);
  return result.exit;
}

function isHangUp(e: unknown): boolean {
  const code = (e as NodeJS.ErrnoException).code;
  return code === 'EPIPE' || code === 'ECONNRESET';
}

function fail(err: NodeJS.WritableStream, msg: string, code = RUN_FAILED_EXIT): number {
  err.write(`repr: ${msg}\n`);
  return code;
}
