// `pnpm build`: type-checks, then bundles the `redsource` CLI (with the three packages) into
// apps/profile-api/dist/cli/redsource.mjs for Node 20 without tsx. Third-party dependencies stay
// external (resolved from apps/profile-api/node_modules); the Lua scripts and the dashboard's files
// are copied next to the bundle, where their `new URL(…, import.meta.url)` lookups expect them.
import { execFileSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { build } from 'esbuild';

const out = 'apps/profile-api/dist';
const manifests = ['apps/profile-api', ...readdirSync('packages').map((p) => join('packages', p))].map((dir) =>
  JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')),
);
const external = [...new Set(manifests.flatMap((m) => Object.keys(m.dependencies ?? {})))].filter(
  (name) => !name.startsWith('@redsource/'),
);

execFileSync('npx', ['tsc', '-p', 'tsconfig.json', '--noEmit'], { stdio: 'inherit' });
rmSync(out, { recursive: true, force: true });
await build({
  entryPoints: ['apps/profile-api/src/cli/main.ts'],
  outfile: join(out, 'cli/redsource.mjs'),
  bundle: true,
  platform: 'node',
  target: 'node20',
  format: 'esm',
  external,
  sourcemap: true,
  logLevel: 'warning',
});
mkdirSync(join(out, 'cli/scripts'), { recursive: true });
for (const pkg of readdirSync('packages')) {
  const scripts = join('packages', pkg, 'src/scripts');
  if (!existsSync(scripts)) continue; // a package without Lua scripts (@redsource/testing)
  for (const file of readdirSync(scripts, { withFileTypes: true }).filter((f) => f.name.endsWith('.lua'))) {
    cpSync(join(scripts, file.name), join(out, 'cli/scripts', file.name));
  }
  // Shared Lua parts (`--@include`), read when a script is loaded.
  if (existsSync(join(scripts, 'includes')))
    cpSync(join(scripts, 'includes'), join(out, 'cli/scripts/includes'), { recursive: true });
}
cpSync('apps/profile-api/src/http/dashboard', join(out, 'dashboard'), { recursive: true });
console.log(`built ${out}/cli/redsource.mjs (run: node ${out}/cli/redsource.mjs serve)`);
