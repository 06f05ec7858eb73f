#!/usr/bin/env node
// Thin launcher: the CLI is compiled TypeScript under dist/.
import { existsSync } from 'node:fs';

const main = new URL('../dist/src/cli/main.js', import.meta.url);
if (!existsSync(main)) {
  // A checkout installed (npm install -g .) or run before its first build.
  process.stderr.write(`repr: not built yet (no ${main.pathname}); run npm run build in ${new URL('..', import.meta.url).pathname}\n`);
  process.exit(1);
}
// exec and cc run once per command of a build: they skip the full CLI (see exec-main.ts).
const sub = process.argv[2];
if (sub === 'exec' || sub === 'cc') {
  const { execMain } = await import(new URL('../dist/src/cli/exec-main.js', import.meta.url).href);
  process.exitCode = await execMain(sub, process.argv.slice(3));
} else {
  await import(main.href);
}
