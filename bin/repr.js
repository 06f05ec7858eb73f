#!/usr/bin/env node
// Thin launcher: the CLI is compiled TypeScript under dist/ (run `npm run build` first).
import '../dist/src/cli/main.js';
