// `pnpm pack:check`: proves the packages work for a user outside this repository, as a new user
// would install them. It builds each publishable package under packages/, packs it with `pnpm pack`,
// checks what the tarball holds, installs the tarballs with plain `npm install` (ioredis, zod,
// typescript, @types/node and fastify from the registry) into a scratch project under the OS temp dir,
// imports every package under plain node, type-checks every packages/*/examples/*.ts there with
// `tsc --strict` (module nodenext), compiles them to JavaScript and runs each with plain node
// against a real Redis: REDIS_URL, else redis://127.0.0.1:6379, else a redis-server from PATH it
// starts and stops itself. The examples use keys of their own and delete them, so a shared Redis is
// fine. Exits 1 on the first failure, saying which step.
// PACK_CHECK_KEEP=1 keeps the scratch project (its path is printed) for a look afterwards.
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative, resolve } from 'node:path';
import { createServer } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';

const root = resolve(fileURLToPath(new URL('..', import.meta.url)));
let redisUrl = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
let ownRedis; // the redis-server this check started, if it had to
process.on('exit', () => ownRedis?.kill());
const exampleTimeoutMs = 120_000;
const rootManifest = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'));
// The same ranges the workspace develops and tests against.
// fastify: the orders example of @redsource/testing serves a GET route with it.
const registryDeps = ['ioredis', 'zod', 'typescript', '@types/node', 'fastify'].map(
  (name) => `${name}@${rootManifest.devDependencies[name]}`,
);

let step = 'start';
let work; // the scratch directory, kept when the check fails
const say = (line) => console.log(`pack-check: ${line}`);
function fail(message) {
  console.error(`pack-check: FAILED at "${step}": ${message}`);
  if (work) console.error(`pack-check: the scratch directory is kept for a look: ${work}`);
  process.exit(1);
}

/** Runs a command, its output shown; fails the check (naming the step) when it exits non-zero. */
function run(command, args, options = {}) {
  const result = spawnSync(command, args, { stdio: 'inherit', ...options, env: { ...process.env, ...options.env } });
  if (result.error) fail(`${command} ${args.join(' ')}: ${result.error.message}`);
  if (result.signal)
    fail(
      `${command} ${args.join(' ')} was stopped by ${result.signal}${result.signal === 'SIGTERM' ? ' (timed out)' : ''}`,
    );
  if (result.status !== 0) fail(`${command} ${args.join(' ')} exited with ${result.status}`);
  return result;
}

// pnpm as the root script was run with (npm_execpath), or pnpm 9 through npx.
const pnpmExec =
  process.env.npm_execpath && /pnpm/.test(process.env.npm_execpath) ? process.env.npm_execpath : undefined;
const pnpm = (args, options) =>
  pnpmExec && pnpmExec.endsWith('js')
    ? run(process.execPath, [pnpmExec, ...args], options)
    : run(pnpmExec ?? 'npx', pnpmExec ? args : ['-y', 'pnpm@9', ...args], options);

// 1. The packages a user installs: every packages/* not marked private.
const packages = readdirSync(join(root, 'packages'), { withFileTypes: true })
  .filter((d) => d.isDirectory() && existsSync(join(root, 'packages', d.name, 'package.json')))
  .map((d) => ({
    dir: join(root, 'packages', d.name),
    manifest: JSON.parse(readFileSync(join(root, 'packages', d.name, 'package.json'), 'utf8')),
  }))
  .filter((p) => !p.manifest.private);
if (packages.length === 0) fail('no publishable package under packages/');
say(`packages: ${packages.map((p) => `${p.manifest.name}@${p.manifest.version}`).join(', ')}`);

step = 'build';
say('building the packages (pnpm build:packages: tsc -p tsconfig.build.json, Lua scripts copied into dist/)');
pnpm(['--filter', './packages/*', 'run', 'build'], { cwd: root });

work = mkdtempSync(join(tmpdir(), 'redsource-pack-check-'));
const tarballs = join(work, 'tarballs');
const project = join(work, 'project');
mkdirSync(tarballs);
mkdirSync(project);
say(`scratch directory: ${work}`);

// 2. Pack, and check each tarball: the build and the Lua scripts in, no tests or sources, exports to dist.
step = 'pack';
const packed = [];
for (const { dir, manifest } of packages) {
  const before = new Set(readdirSync(tarballs));
  pnpm(['pack', '--pack-destination', tarballs], { cwd: dir, stdio: ['ignore', 'ignore', 'inherit'] });
  const tarball = readdirSync(tarballs).find((f) => !before.has(f));
  if (!tarball) fail(`pnpm pack wrote no tarball for ${manifest.name}`);
  const files = execFileSync('tar', ['-tzf', join(tarballs, tarball)], { encoding: 'utf8' })
    .split('\n')
    .filter(Boolean)
    .map((f) => f.replace(/^package\//, ''));
  const luaScripts = listFiles(join(dir, 'src/scripts')).map((f) => `dist/scripts/${f}`);
  const required = [
    'package.json',
    'README.md',
    'LICENSE',
    'CHANGELOG.md',
    'dist/index.js',
    'dist/index.d.ts',
    'dist/index.js.map',
    ...luaScripts,
  ];
  const missing = required.filter((f) => !files.includes(f));
  if (missing.length > 0) fail(`${tarball} lacks ${missing.join(', ')}`);
  const unwanted = files.filter((f) => /(^|\/)(test|src)\//.test(f) || /\.(spec|test)\.[cm]?[jt]s$/.test(f));
  if (unwanted.length > 0) fail(`${tarball} holds tests or sources: ${unwanted.join(', ')}`);
  const packedManifest = JSON.parse(
    execFileSync('tar', ['-xzOf', join(tarballs, tarball), 'package/package.json'], { encoding: 'utf8' }),
  );
  const entry = packedManifest.exports?.['.'];
  if (entry?.import !== './dist/index.js' || entry?.types !== './dist/index.d.ts')
    fail(`${tarball}: exports["."] is ${JSON.stringify(entry)}, not dist/`);
  const workspaceRanges = Object.entries({ ...packedManifest.dependencies, ...packedManifest.peerDependencies }).filter(
    ([, range]) => String(range).startsWith('workspace:'),
  );
  if (workspaceRanges.length > 0)
    fail(`${tarball} still has workspace: ranges: ${workspaceRanges.map(([n]) => n).join(', ')}`);
  say(
    `packed ${tarball}: ${files.length} files (${luaScripts.length} Lua scripts), exports -> dist/, peer dependencies ${Object.keys(packedManifest.peerDependencies ?? {}).join(', ') || 'none'}`,
  );
  packed.push({ name: manifest.name, tarball: join(tarballs, tarball) });
}

// 3. A user's project: plain npm, the tarballs plus what a user brings from the registry.
step = 'npm install';
writeFileSync(
  join(project, 'package.json'),
  `${JSON.stringify({ name: 'redsource-pack-check', private: true, type: 'module' }, null, 2)}\n`,
);
say(`npm install (in ${project}) of the ${packed.length} tarballs and, from the registry, ${registryDeps.join(' ')}`);
const install = spawnSync(
  'npm',
  ['install', '--no-audit', '--no-fund', '--loglevel=error', ...packed.map((p) => p.tarball), ...registryDeps],
  {
    cwd: project,
    stdio: 'inherit',
  },
);
if (install.status !== 0) {
  fail(
    `npm install exited with ${install.status ?? install.signal ?? install.error?.message}: if the lines above show a registry error ` +
      '(ENOTFOUND, ETIMEDOUT, E404, EAI_AGAIN), the npm registry could not be reached or lacks a package; the packages themselves were not tried',
  );
}
const installed = (name) =>
  JSON.parse(readFileSync(join(project, 'node_modules', name, 'package.json'), 'utf8')).version;
say(
  `installed ${[...packed.map((p) => p.name), 'ioredis', 'zod', 'typescript', '@types/node', 'fastify'].map((n) => `${n}@${installed(n)}`).join(', ')}`,
);

// 4. Each package imports under plain node (no TypeScript loader anywhere in this project).
step = 'import under node';
for (const { name } of packed) {
  const probe = spawnSync(
    process.execPath,
    [
      '--input-type=module',
      '-e',
      `const m = await import(${JSON.stringify(name)}); console.log(Object.keys(m).length);`,
    ],
    {
      cwd: project,
      encoding: 'utf8',
    },
  );
  if (probe.status !== 0) fail(`node could not import ${name}:\n${probe.stderr}`);
  say(`import('${name}') under node ${process.version}: ${probe.stdout.trim()} exports`);
}

// 5. The examples, copied unchanged, type-checked with tsc --strict (nodenext), compiled, run.
step = 'copy examples';
const examples = packages.flatMap(({ dir }) =>
  existsSync(join(dir, 'examples'))
    ? readdirSync(join(dir, 'examples'))
        .filter((f) => f.endsWith('.ts') && !f.endsWith('.d.ts'))
        .map((f) => join(dir, 'examples', f))
    : [],
);
if (examples.length === 0) fail('no packages/*/examples/*.ts found');
for (const file of examples)
  cpSync(file, join(project, 'examples', relative(join(root, 'packages'), file).replace('/examples/', '/')));
writeFileSync(
  join(project, 'tsconfig.json'),
  `${JSON.stringify(
    {
      compilerOptions: {
        strict: true,
        module: 'nodenext',
        moduleResolution: 'nodenext',
        target: 'es2022',
        lib: ['es2023'],
        types: ['node'],
        skipLibCheck: false,
        rootDir: 'examples',
        outDir: 'dist',
      },
      include: ['examples'],
    },
    null,
    2,
  )}\n`,
);

step = 'tsc --strict';
const tsc = join(project, 'node_modules/typescript/bin/tsc');
say(
  `type-checking ${examples.length} examples with tsc --strict (module nodenext, skipLibCheck false): ${examples.map((f) => relative(root, f)).join(', ')}`,
);
run(process.execPath, [tsc, '-p', project, '--noEmit'], { cwd: project });
step = 'tsc --strict (bundler)';
say('type-checking them again as a bundler user would (module esnext, moduleResolution bundler)');
run(process.execPath, [tsc, '-p', project, '--noEmit', '--module', 'esnext', '--moduleResolution', 'bundler'], {
  cwd: project,
});
step = 'tsc (emit)';
run(process.execPath, [tsc, '-p', project], { cwd: project });

step = 'Redis';
let ping = pingRedis(redisUrl);
if (!ping.ok && !process.env.REDIS_URL) {
  // A clean machine (CI) with nothing on 6379: a throwaway redis-server from PATH, as the tests do.
  const port = await freePort();
  say(
    `nothing answers at ${redisUrl} (${ping.message}): starting redis-server on 127.0.0.1:${port} (no persistence, stopped at the end)`,
  );
  ownRedis = spawn(
    'redis-server',
    ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'],
    { stdio: 'ignore' },
  );
  ownRedis.on('error', (error) =>
    fail(
      `no Redis at ${redisUrl}, and redis-server could not be started: ${error.message} (set REDIS_URL or put redis-server on PATH)`,
    ),
  );
  ownRedis.unref(); // stopped on exit (below), whatever way the check ends
  redisUrl = `redis://127.0.0.1:${port}`;
  for (const deadline = Date.now() + 10_000; !(ping = pingRedis(redisUrl)).ok && Date.now() < deadline;)
    await sleep(200);
}
if (!ping.ok) fail(`no Redis answers at ${redactUrl(redisUrl)} (set REDIS_URL): ${ping.message}`);
say(`Redis at ${redactUrl(redisUrl)} answers PING`);

for (const file of examples) {
  const name = relative(join(root, 'packages'), file).replace('/examples/', '/');
  step = `run ${name}`;
  const js = join(project, 'dist', name.replace(/\.ts$/, '.js'));
  say(`running node ${relative(project, js)} (from ${relative(root, file)})`);
  const started = Date.now();
  run(process.execPath, [js], {
    cwd: project,
    env: { REDIS_URL: redisUrl },
    timeout: exampleTimeoutMs,
    killSignal: 'SIGTERM',
  });
  say(`${name} passed in ${((Date.now() - started) / 1000).toFixed(1)} s`);
}

if (ownRedis) {
  ownRedis.kill();
  say(`stopped the redis-server it started (pid ${ownRedis.pid})`);
}
if (process.env.PACK_CHECK_KEEP) say(`kept ${work}`);
else rmSync(work, { recursive: true, force: true });
say(
  `OK: ${packed.length} packages packed, installed with npm, imported under node; ${examples.length} examples type-checked (tsc --strict) and run with node`,
);

/** Every file under dir, as paths relative to it (forward slashes). */
function listFiles(dir, prefix = '') {
  if (!existsSync(dir)) return [];
  return readdirSync(dir, { withFileTypes: true }).flatMap((d) =>
    d.isDirectory() ? listFiles(join(dir, d.name), `${prefix}${d.name}/`) : [`${prefix}${d.name}`],
  );
}

/** PING through the scratch project's ioredis, once, without retries: { ok, message }. */
function pingRedis(url) {
  const probe = spawnSync(
    process.execPath,
    [
      '--input-type=module',
      '-e',
      `import { Redis } from 'ioredis';
       const redis = new Redis(process.env.REDIS_URL, { lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null, connectTimeout: 3000 });
       let cause;
       redis.on('error', (error) => { cause = error; });
       try { console.log(await redis.connect().then(() => redis.ping())); }
       catch (error) { console.error((cause ?? error).message); process.exitCode = 1; }
       finally { redis.disconnect(); }`,
    ],
    { cwd: project, encoding: 'utf8', env: { ...process.env, REDIS_URL: url }, timeout: 10_000 },
  );
  return { ok: probe.status === 0, message: probe.error?.message ?? probe.stderr.trim() };
}

/** A TCP port nothing listens on (the OS picks it). */
function freePort() {
  return new Promise((done, failed) => {
    const server = createServer().once('error', failed);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => done(port));
    });
  });
}

/** The URL without its password, for messages. */
function redactUrl(url) {
  try {
    const parsed = new URL(url);
    if (parsed.password) parsed.password = '***';
    return parsed.toString();
  } catch {
    return '(an unparsable REDIS_URL)';
  }
}
