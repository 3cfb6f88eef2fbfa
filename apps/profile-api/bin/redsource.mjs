#!/usr/bin/env node
// The `redsource` command (`pnpm exec redsource`): in the workspace, where tsx is installed, the
// TypeScript source through tsx's loader in this same process (no child process between a signal
// and the service); without tsx (a production install), the bundle `pnpm build` writes.
import { existsSync } from 'node:fs';

const source = new URL('../src/cli/main.ts', import.meta.url);
const bundle = new URL('../dist/cli/redsource.mjs', import.meta.url);
let tsx;
try {
  tsx = await import('tsx/esm/api');
} catch {
  tsx = undefined;
}
if (tsx && existsSync(source)) {
  tsx.register();
  await import(source.href);
} else if (existsSync(bundle)) {
  await import(bundle.href);
} else {
  process.stderr.write('redsource: neither tsx (a development install) nor the built bundle (pnpm build) is here\n');
  process.exit(1);
}
