import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

const made: string[] = [];
// Removed when the test file's process exits rather than with node:test's
// after(), whose scope depends on where it is called (a before() hook would
// delete the directory while the suite still runs).
process.once('exit', () => {
  for (const d of made) rmSync(d, { recursive: true, force: true });
});

/** A fresh directory, removed when the test process exits. */
export function tmpDir(prefix = 'repr-test-'): string {
  const dir = mkdtempSync(path.join(os.tmpdir(), prefix));
  made.push(dir);
  return dir;
}

/**
 * Removes `dir` in a detached process that outlives the caller: removing
 * tens of thousands of files takes minutes on a busy file system (their
 * metadata is written back), and nothing needs to wait for it.
 */
export function removeInBackground(dir: string): void {
  spawn('rm', ['-rf', dir], { detached: true, stdio: 'ignore' }).unref();
}
