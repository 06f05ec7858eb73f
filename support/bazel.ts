import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { copyFileSync, cpSync, existsSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { tmpDir } from './tmp.js';

/** Repository root, from dist/support/. */
const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

/** The test workspace; its WORKSPACE, .bazelrc and third_party/ are what any offline workspace here needs. */
export const FIXTURE = path.join(REPO_ROOT, 'test', 'fixtures', 'bazel-ws');

export function hasBazel(): boolean {
  return ['/usr/bin/bazel', '/usr/local/bin/bazel'].some((p) => existsSync(p));
}

/**
 * Bazel startup options that let Debian's Bazel 4.2.3 speak gRPC over TLS.
 *
 * Its bundled Netty has no JDK ALPN negotiator, so a grpcs:// remote fails
 * with "JDK provider does not support ALPN protocol" (exit 37, cause only in
 * java.log) unless OpenSSL is reachable through netty-tcnative. Debian ships
 * that JNI library (libnetty-tcnative-jni) as libnetty-tcnative.so; Netty
 * looks for libnetty_tcnative.so and the library checks its own file name when
 * loaded, so it must be a copy under that name, not a symlink.
 */
export function bazelTlsStartupArgs(): string[] {
  const found = readdirSync('/usr/lib', { withFileTypes: true })
    .filter((d) => d.isDirectory())
    .map((d) => path.join('/usr/lib', d.name, 'jni', 'libnetty-tcnative.so'))
    .find((p) => existsSync(p));
  if (!found) throw new Error("Bazel needs netty-tcnative for TLS: apt-get install -y libnetty-tcnative-jni (see README, 'Bazel over TLS')");
  const dir = tmpDir('repr-tcnative-');
  copyFileSync(found, path.join(dir, 'libnetty_tcnative.so'));
  return [`--host_jvm_args=-Djava.library.path=${dir}`];
}

/**
 * A copy of a fixture workspace with its own Bazel output root, so that tests
 * never share a Bazel server (or its caches) with anything else.
 */
export class BazelWorkspace {
  readonly dir: string;
  private readonly outputRoot: string;

  constructor(
    fixture = FIXTURE,
    /** Bazel startup options for every command, e.g. bazelTlsStartupArgs(). */
    private readonly startupArgs: readonly string[] = [],
  ) {
    const base = tmpDir('repr-bazel-');
    this.dir = path.join(base, 'ws');
    this.outputRoot = path.join(base, 'output-root');
    cpSync(fixture, this.dir, { recursive: true });
  }

  /**
   * Runs one Bazel command. The server JVM is kept between commands of the
   * same workspace (starting one costs ~3 s); --max_idle_secs makes sure a
   * crashed test cannot leave it behind for long.
   */
  run(args: string[], timeoutMs = 300_000): Promise<{ code: number; stdout: string; stderr: string }> {
    return new Promise((resolve, reject) => {
      const child = spawn('bazel', [`--output_user_root=${this.outputRoot}`, '--max_idle_secs=120', '--nohome_rc', ...this.startupArgs, ...args], {
        cwd: this.dir,
        stdio: ['ignore', 'pipe', 'pipe'],
        env: { ...process.env, HOME: process.env.HOME ?? '/root' },
      });
      let stdout = '';
      let stderr = '';
      child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
      child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
      const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
      child.once('error', reject);
      child.once('exit', (code) => {
        clearTimeout(timer);
        resolve({ code: code ?? -1, stdout, stderr });
      });
    });
  }

  /** Runs a command and throws with Bazel's output if it fails. */
  async ok(args: string[]): Promise<string> {
    const r = await this.run(args);
    if (r.code !== 0) throw new Error(`bazel ${args.join(' ')} exited with ${r.code}:\n${r.stderr.slice(-6000)}\n${r.stdout.slice(-2000)}`);
    return r.stderr;
  }

  /**
   * SHA-256 of every output file under bazel-bin for the given packages
   * (runfiles trees and parameter files left out: they are Bazel's own).
   */
  outputHashes(packages: string[]): Map<string, string> {
    const bin = path.join(this.dir, 'bazel-bin');
    const out = new Map<string, string>();
    const walk = (rel: string) => {
      const abs = path.join(bin, rel);
      for (const name of readdirSync(abs)) {
        const r = path.join(rel, name);
        if (name.endsWith('.runfiles') || name.endsWith('.runfiles_manifest') || name.endsWith('.params') || name.endsWith('.d')) continue;
        const st = statSync(path.join(bin, r));
        if (st.isDirectory()) walk(r);
        else if (st.isFile())
          out.set(
            r,
            createHash('sha256')
              .update(readFileSync(path.join(bin, r)))
              .digest('hex'),
          );
      }
    };
    for (const p of packages) walk(p);
    return out;
  }

  async shutdown(): Promise<void> {
    await this.run(['shutdown'], 60_000).catch(() => undefined);
    rmSync(this.dir, { recursive: true, force: true });
  }
}

export interface ProcessSummary {
  total: number;
  /** Count per kind, e.g. "internal", "linux-sandbox", "remote cache hit", "remote". */
  kinds: Map<string, number>;
}

/**
 * Parses Bazel 4's closing line "INFO: 28 processes: 11 internal, 17 linux-sandbox."
 * (or "... 2 remote cache hit, 1 internal."). Kinds it does not know are kept too.
 */
export function processSummary(stderr: string): ProcessSummary {
  const lines = stderr.split('\n').filter((l) => /INFO: \d+ process(es)?[:.]/.test(l));
  const line = lines.at(-1);
  if (!line) throw new Error(`no process summary in Bazel output:\n${stderr.slice(-3000)}`);
  const m = /INFO: (\d+) process(?:es)?(?:: (.*))?\.?\s*$/.exec(line)!;
  const kinds = new Map<string, number>();
  for (const part of (m[2] ?? '').replace(/\.$/, '').split(',')) {
    const k = /^\s*(\d+) (.+?)\s*$/.exec(part);
    if (k) kinds.set(k[2]!, Number(k[1]));
  }
  return { total: Number(m[1]), kinds };
}
