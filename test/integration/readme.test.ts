import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { after, describe, it } from 'node:test';
import { REPO_ROOT } from '../../support/servers.js';
import { REPR_BIN } from '../../support/spawn-server.js';
import { tmpDir } from '../../support/tmp.js';

/**
 * README.md is checked against the real `repr`: every `repr COMMAND --flag`
 * it shows must be a command and flag that exist, and the fenced blocks
 * marked `<!-- readme-test: run -->` run as written, in order: install to a
 * temporary npm prefix, the server, status, a remote command.
 */
const README = readFileSync(path.join(REPO_ROOT, 'README.md'), 'utf8');
const RUN_MARK = '<!-- readme-test: run -->';

interface Block {
  body: string;
  run: boolean;
}

function fencedBlocks(md: string): Block[] {
  return [...md.matchAll(/^(<!-- readme-test: run -->\n)?```[a-z]*\n([\s\S]*?)^```$/gm)].map((m) => ({ body: m[2]!, run: m[1] !== undefined }));
}

/** A block's commands: comments dropped, `\` continuations and the synopsis' indented lines joined to the command they continue. */
function commandLines(body: string): string[] {
  const out: string[] = [];
  let continues = false;
  for (const raw of body.split('\n')) {
    const line = raw.replace(/(^|\s)#.*$/, '').trimEnd();
    if (!line.trim()) continue;
    if ((continues || /^\s/.test(line)) && out.length > 0) out[out.length - 1] += ` ${line.trim()}`;
    else out.push(line.trim());
    continues = line.endsWith('\\');
  }
  return out.map((l) => l.replace(/\\ /g, ' '));
}

/** Every `repr WORD ...` in the README's code (blocks and inline spans), with the flags given before any `--`. */
function reprInvocations(md: string): { sub: string; flags: string[]; text: string }[] {
  const texts = [...fencedBlocks(md).flatMap((b) => commandLines(b.body)), ...[...md.matchAll(/`(repr [^`]+)`/g)].map((m) => m[1]!)];
  const found: { sub: string; flags: string[]; text: string }[] = [];
  for (const text of texts) {
    for (const m of text.matchAll(/(?:^|[\s;&|(])repr((?: [a-z][\w-]*)?)((?:(?! -- )[^;&|])*)/g)) {
      found.push({ sub: m[1]!.trim(), flags: m[2]!.match(/(?<![\w-])--[a-z][a-z0-9-]*/g) ?? [], text });
    }
  }
  return found;
}

function helpFlags(sub: string): Set<string> | undefined {
  const r = spawnSync(process.execPath, [REPR_BIN, ...(sub ? [sub] : []), '--help'], { encoding: 'utf8' });
  if (r.status !== 0) return undefined;
  return new Set(r.stdout.match(/--[a-z][a-z0-9-]*/g) ?? []);
}

describe('README.md', () => {
  it('names only commands and flags that repr has', () => {
    const invocations = reprInvocations(README);
    assert.ok(invocations.length > 30, `found the README's repr commands (${invocations.length})`);
    const help = new Map<string, Set<string> | undefined>();
    const wrong: string[] = [];
    for (const { sub, flags, text } of invocations) {
      // `repr COMMAND --help` and the like: a placeholder, not a command.
      const command = /^[a-z]+$/.test(sub) && sub !== 'repr' ? sub : '';
      if (!help.has(command)) help.set(command, helpFlags(command));
      const known = help.get(command);
      if (!known) {
        wrong.push(`no command "repr ${command}": ${text}`);
        continue;
      }
      for (const f of flags) if (!known.has(f)) wrong.push(`repr ${command} has no ${f}: ${text}`);
    }
    assert.deepEqual(wrong, []);
  });

  describe('its marked commands, run as written', () => {
    const home = tmpDir('repr-home-');
    const prefix = tmpDir('repr-prefix-');
    const project = path.join(home, 'src', 'myproject');
    mkdirSync(project, { recursive: true });
    writeFileSync(path.join(project, 'hello.c'), 'int main(void) { return 0; }\n');
    // A user's shell: repr comes from the npm prefix the install writes to,
    // and ~ (the data directory, the project) is a home of its own.
    const env: NodeJS.ProcessEnv = {
      ...process.env,
      HOME: home,
      PATH: `${path.join(prefix, 'bin')}:${process.env.PATH}`,
      npm_config_prefix: prefix,
      npm_config_cache: path.join(process.env.HOME ?? home, '.npm'),
      npm_config_update_notifier: 'false',
      npm_config_fund: 'false',
      npm_config_audit: 'false',
    };
    delete env.REPR_SERVER;
    delete env.REPR_DATA_DIR;
    const servers: { stop(): Promise<void> }[] = [];
    after(async () => {
      for (const s of servers) await s.stop();
    });

    it('installs repr, starts the server, asks its status and runs a command from a project directory', { timeout: 120_000 }, async () => {
      const marked = fencedBlocks(README).filter((b) => b.run);
      assert.ok(marked.length >= 2, `${RUN_MARK} blocks found`);
      for (const block of marked) {
        let script: string[] = [];
        for (const line of [...commandLines(block.body), '']) {
          if (line === '' || /^repr server\b/.test(line)) {
            if (script.length > 0) runScript(script.join('\n'), env);
            script = [];
            if (line !== '') {
              const server = await startServer(line, env);
              servers.push(server);
              env.REPR_SERVER = server.url;
            }
          } else script.push(line);
        }
      }
      assert.ok(existsSync(path.join(prefix, 'bin', 'repr')), 'npm install -g . put repr in the prefix');
      assert.ok(existsSync(path.join(home, '.local', 'share', 'repr', 'repr.lock')), 'the server used the documented default data directory');
    });
  });
});

/** Runs lines of a README block in a shell, stopping at the first that fails. */
function runScript(script: string, env: NodeJS.ProcessEnv): void {
  const r = spawnSync('sh', ['-ec', script], { cwd: REPO_ROOT, env, encoding: 'utf8', timeout: 60_000 });
  assert.equal(r.status, 0, `README commands failed:\n${script}\n--- stdout\n${r.stdout}\n--- stderr\n${r.stderr}`);
}

/**
 * Starts a README `repr server` line. Only the port differs from the README:
 * tests run side by side, so it listens on one chosen now (the README's
 * clients then find it through $REPR_SERVER, as documented).
 */
async function startServer(line: string, env: NodeJS.ProcessEnv): Promise<{ url: string; stop(): Promise<void> }> {
  const child = spawn('sh', ['-c', `exec ${line} --listen 127.0.0.1:0`], { cwd: REPO_ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const first = await new Promise<string>((resolve, reject) => {
    const rl = createInterface({ input: child.stdout! });
    rl.once('line', resolve);
    child.once('exit', (code) => reject(new Error(`${line} exited with ${code}:\n${stderr}`)));
  });
  const rec = JSON.parse(first) as { msg?: string; address?: string };
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
    await exited;
  };
  if (rec.msg !== 'repr server listening') {
    await stop();
    assert.fail(`the first log line of ${line} is not "repr server listening": ${first}`);
  }
  return { url: `grpc://${rec.address}`, stop };
}
