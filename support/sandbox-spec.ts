import { chmodSync, mkdirSync } from 'node:fs';
import path from 'node:path';
import type { SandboxSpec } from '../src/sandbox/sandbox.js';
import { tmpDir } from './tmp.js';

export type FileSpec = SandboxSpec & { rootDir: string; stdoutPath: string; stderrPath: string };

/** A sandbox spec running `script` in a fresh world-writable root, with stdout and stderr to files beside it. */
export function fileSpec(script: string, over: Partial<SandboxSpec> = {}, opts: { shell?: string; timeoutMs?: number } = {}): FileSpec {
  const dir = tmpDir('repr-sbx-');
  const rootDir = path.join(dir, 'root');
  mkdirSync(rootDir);
  chmodSync(rootDir, 0o777);
  return {
    argv: [opts.shell ?? '/bin/sh', '-c', script],
    env: { PATH: '/usr/bin:/bin' },
    rootDir,
    workingDirectory: '',
    stdoutPath: path.join(dir, 'stdout'),
    stderrPath: path.join(dir, 'stderr'),
    timeoutMs: opts.timeoutMs ?? 30_000,
    limits: {},
    network: false,
    ...over,
  };
}
