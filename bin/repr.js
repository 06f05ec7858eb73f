#!/usr/bin/env node
// Thin launcher: the CLI is compiled TypeScript under dist/.
import { existsSync } from 'node:fs';

const main = new URL('../dist/src/cli/main.js', import.meta.url);
if (!existsSync(main)) {
  // A checkout installed (npm install -g .) or run before its first build.
  process.stderr.write(`repr: not built yet (no ${main.pathname}); run npm run build in ${new URL('..', import.meta.url).pathname}\n`);
  process.exit(1);
}
await import(main.href);
