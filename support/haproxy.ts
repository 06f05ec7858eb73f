import { type ChildProcess, spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { freePort } from './postgres.js';
import { tmpDir } from './tmp.js';

/** Debian's HAProxy in front of several gRPC servers, as a farm puts it in front of its schedulers. */
export interface HaproxyServer {
  /** host:port clients dial. */
  address: string;
  port: number;
  /** The configuration it runs with (for a failing test's message). */
  config: string;
  /** Connections open now to each backend, by its host:port. */
  sessions(): Promise<Map<string, number>>;
  stop(): void;
}

/**
 * TCP mode, so HTTP/2 passes through untouched and each client connection
 * (a Bazel build's one channel) sticks to one backend until that backend
 * dies; the checks notice a dead backend within half a second and new
 * connections go to the live ones.
 */
export async function startHaproxy(backends: readonly string[]): Promise<HaproxyServer> {
  const dir = tmpDir('repr-haproxy-');
  const port = await freePort();
  const stats = path.join(dir, 'stats.sock');
  const config = [
    'global',
    '  maxconn 4096',
    `  stats socket ${stats} mode 600 level user`,
    'defaults',
    '  mode tcp',
    '  timeout connect 2s',
    // Execute streams stay open, silent, for as long as an action runs.
    '  timeout client 1h',
    '  timeout server 1h',
    '  option redispatch',
    '  retries 3',
    'frontend grpc',
    `  bind 127.0.0.1:${port}`,
    '  default_backend schedulers',
    'backend schedulers',
    '  balance roundrobin',
    '  option tcp-check',
    ...backends.map((b, i) => `  server s${i} ${b} check inter 250ms fall 2 rise 2`),
    '',
  ].join('\n');
  const file = path.join(dir, 'haproxy.cfg');
  writeFileSync(file, config);
  const child: ChildProcess = spawn('haproxy', ['-f', file, '-db'], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => {
    stderr += d.toString();
  });
  const stop = () => {
    if (child.exitCode === null) child.kill('SIGKILL');
  };
  process.once('exit', stop);
  const deadline = Date.now() + 10_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`haproxy exited with ${child.exitCode}: ${stderr}`);
    if (await accepts(port)) break;
    if (Date.now() > deadline) throw new Error(`haproxy did not listen on ${port} within 10 s: ${stderr}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  const sessions = async () => {
    const csv = await ask(stats, 'show stat');
    const byServer = new Map<string, number>();
    // pxname,svname,qcur,qmax,scur,…: one line per server, scur its current sessions.
    for (const line of csv.split('\n')) {
      const f = line.split(',');
      const i = Number(f[1]?.replace(/^s/, ''));
      if (f[0] === 'schedulers' && /^s\d+$/.test(f[1] ?? '')) byServer.set(backends[i]!, Number(f[4]));
    }
    return byServer;
  };
  return { address: `127.0.0.1:${port}`, port, config, sessions, stop };
}

/** One command on HAProxy's stats socket; its whole answer. */
function ask(socket: string, command: string): Promise<string> {
  return new Promise((resolve, reject) => {
    let out = '';
    const s = net.connect(socket, () => s.write(`${command}\n`));
    s.on('data', (d) => {
      out += d.toString();
    });
    s.once('end', () => resolve(out));
    s.once('error', reject);
  });
}

function accepts(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1');
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}
