import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { isolatedServiceEnv, runCli, type CliProcess } from '../../../test/support/cli.ts';
import { freePort, pings } from '../../../test/support/net.ts';
import { eventually, useTestRedis } from '../../../test/support/redis.ts';
import { startSecureRedis, type SecureRedis } from './secure-redis.ts';

/**
 * Which Redis a process uses, and what it says when that Redis is not there: one line and a quick
 * non-zero exit for a one-shot command, one warning per outage (and a line when Redis is back) for a
 * service, 503 within about a second for a request, one line and nothing left behind for a taken port.
 */
const ctx = useTestRedis();
let secure: SecureRedis;
beforeAll(async () => {
  secure = await startSecureRedis({ user: 'app', password: 'right-secret-42' });
});
afterAll(async () => {
  await secure.stop();
});

const children: CliProcess[] = [];
const servers: ChildProcess[] = [];
afterEach(async () => {
  for (const c of children.splice(0)) {
    if (c.child.exitCode === null && c.child.signalCode === null) c.child.kill('SIGKILL');
    await c.exited;
  }
  for (const s of servers.splice(0)) s.kill('SIGKILL');
});

function cli(args: string[], env: Record<string, string>): CliProcess {
  const run = runCli(args, env);
  children.push(run);
  return run;
}

/** Runs the CLI to its end: exit code, output, and how long it took. */
async function timed(args: string[], env: Record<string, string>) {
  const started = Date.now();
  const run = cli(args, env);
  const code = await Promise.race([run.exited, sleep(20_000).then(() => 'hung' as const)]);
  return { code, output: run.output(), ms: Date.now() - started };
}

/** The lines that are not pino's JSON log lines. */
const plainLines = (output: string) => output.split('\n').filter((l) => l.trim() !== '' && !l.startsWith('{'));
const logLines = (output: string) =>
  output
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as { level: number; msg: string; [k: string]: unknown });

/** A tsx child takes about a second to start on its own; "within a few seconds" leaves the rest. */
const ONE_SHOT_BUDGET_MS = 6_000;

describe('one-shot commands: one line, a non-zero exit within a few seconds', () => {
  it.each([['status'], ['dlq', 'list'], ['replay'], ['seed']])(
    '%s against a closed port says which Redis is not reachable and what to check',
    async (...args) => {
      const port = await freePort();
      const run = await timed(args, { ...isolatedServiceEnv(`redis://127.0.0.1:${port}`) });
      expect(run.code, run.output).toBe(1);
      expect(run.ms, run.output).toBeLessThan(ONE_SHOT_BUDGET_MS);
      expect(plainLines(run.output), run.output).toEqual([
        `redsource: Redis at 127.0.0.1:${port} is not reachable: connect ECONNREFUSED 127.0.0.1:${port}: check REDIS_URL / that Redis runs`,
      ]);
    },
  );

  it.each([['status'], ['seed'], ['dlq', 'list'], ['replay']])(
    '%s with a wrong password names the user and never the password',
    async (...args) => {
      const url = `redis://app:not-the-password@127.0.0.1:${secure.port}`;
      const run = await timed(args, { ...isolatedServiceEnv(url) });
      expect(run.code, run.output).toBe(1);
      expect(run.ms, run.output).toBeLessThan(ONE_SHOT_BUDGET_MS);
      expect(plainLines(run.output), run.output).toEqual([
        `redsource: Redis at 127.0.0.1:${secure.port} refused the login for user app: check the user and password in REDIS_URL`,
      ]);
      expect(run.output).not.toContain('not-the-password');
    },
  );
});

describe('the Redis a process uses, logged once', () => {
  it('names address, TLS, user and source, never the password', async () => {
    const run = await timed(['status', '--json'], { ...isolatedServiceEnv(secure.url) });
    expect(run.code, run.output).toBe(0);
    const lines = logLines(run.output).filter((l) => l.msg.startsWith('using Redis'));
    expect(lines.map((l) => l.msg)).toEqual([
      `using Redis at 127.0.0.1:${secure.port} (no TLS, user app; from REDIS_URL)`,
    ]);
    expect(lines[0]?.['redis']).toEqual({
      address: `127.0.0.1:${secure.port}`,
      tls: false,
      user: 'app',
      db: 0,
      source: 'REDIS_URL',
    });
    expect(run.output).not.toContain(secure.password);
  });

  it('without REDIS_URL: the local one, or the embedded redis-server with its data directory', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'redsource-embedded-'));
    try {
      const env: Record<string, string> = { ...isolatedServiceEnv(''), REDSOURCE_DATA_DIR: dataDir };
      delete env['REDIS_URL'];
      const run = runCli(['status', '--json'], env);
      // runCli passes the test's own environment through: REDIS_URL must be unset in the child's.
      children.push(run);
      const code = await run.exited;
      const line = logLines(run.output()).find((l) => l.msg.startsWith('using Redis'));
      if (process.env['REDIS_URL']) return; // the harness' REDIS_URL reaches the child: nothing more to see here
      expect(code, run.output()).toBe(0);
      const local = (await pings(6379)) && !line?.msg.includes('embedded');
      expect(line?.msg, run.output()).toBe(
        local
          ? 'using Redis at 127.0.0.1:6379 (no TLS, user default; REDIS_URL not set: the one answering on 127.0.0.1:6379)'
          : expect.stringMatching(
              new RegExp(
                `^using Redis at 127\\.0\\.0\\.1:\\d+ \\(no TLS, user default; REDIS_URL not set and nothing on 127\\.0\\.0\\.1:6379: an embedded redis-server this process started, data in ${dataDir.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} \\(AOF on\\)\\)$`,
              ),
            ),
      );
    } finally {
      rmSync(dataDir, { recursive: true, force: true });
    }
  });
});

/** Starts `serve` on a free port; resolves with the child and its base URL once it listens. */
async function serve(env: Record<string, string>, args: string[] = []) {
  const run = cli(['serve', ...args], { PORT: '0', ...env });
  const listening = await eventually(
    async () => /listening on (http:\/\/127\.0\.0\.1:\d+)/.exec(run.output())?.[1],
    15_000,
  );
  if (!listening) throw new Error(`serve did not listen:\n${run.output()}`);
  return { run, base: listening };
}

async function timedGet(url: string) {
  const started = Date.now();
  const answer = await fetch(url);
  await answer.text();
  return { status: answer.status, retryAfter: answer.headers.get('retry-after'), ms: Date.now() - started };
}

describe('services while Redis is away', () => {
  it('say so once, answer reads with 503 within about a second, and say when Redis is back', async () => {
    const port = await freePort();
    const { run, base } = await serve({ ...isolatedServiceEnv(`redis://127.0.0.1:${port}`) });
    await sleep(1_500);

    const profile = await timedGet(`${base}/users/1/profile`);
    expect(profile.status).toBe(503);
    expect(profile.retryAfter).toBe('1');
    expect(profile.ms).toBeLessThan(1_500);
    const dashboard = await timedGet(`${base}/dashboard/status.json`);
    expect(dashboard.status).toBe(503);
    expect(dashboard.ms).toBeLessThan(1_500);
    const metrics = await timedGet(`${base}/metrics`);
    expect(metrics.ms).toBeLessThan(1_500);

    await sleep(2_500); // several reconnect attempts
    const server = spawn(
      'redis-server',
      ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'],
      { stdio: 'ignore' },
    );
    servers.push(server);
    expect(await eventually(async () => /is back after/.test(run.output()), 10_000), run.output()).toBe(true);

    const warnings = logLines(run.output()).filter((l) => l.level >= 40);
    const outage = warnings.filter((l) => l.msg.startsWith(`Redis at 127.0.0.1:${port} is not reachable`));
    expect(outage, run.output()).toHaveLength(1);
    expect(outage[0]?.msg).toMatch(/: check REDIS_URL \/ that Redis runs; retrying until it answers$/);
    // Nothing else says the same again and again: at most one warning per distinct message.
    const messages = warnings.map((l) => {
      const waiting: unknown = l['waiting'] ?? ''; // the wait's reason, a string
      return `${l.msg}|${String(waiting)}`;
    });
    expect(new Set(messages).size, run.output()).toBe(messages.length);
    expect(run.output()).not.toContain('redis connection error');
    // The client library's wording and stacks are for debug; the warnings say what Redis is doing.
    const warningText = warnings.map((l) => JSON.stringify(l)).join('\n');
    expect(warningText).not.toMatch(/maxRetriesPerRequest|MaxRetriesPerRequestError|"stack"/);
  });

  it('serve --demo with a wrong password says the login was refused, not that Redis did not answer', async () => {
    const url = `redis://app:not-the-password@127.0.0.1:${secure.port}`;
    const { run } = await serve({ ...isolatedServiceEnv(url) }, ['--demo']);
    await sleep(3_000);
    const output = run.output();
    expect(output).not.toMatch(/did not answer/);
    expect(output).not.toContain('not-the-password');
    const warnings = logLines(output).filter((l) => l.level >= 40);
    expect(warnings.filter((l) => l.msg.startsWith('demo data not appended')).map((l) => l.msg)).toEqual([
      `demo data not appended: Redis at 127.0.0.1:${secure.port} refused the login for user app: check the user and password in REDIS_URL`,
    ]);
    expect(
      warnings.filter((l) => l.msg.includes('refused the login') && l.msg.endsWith('retrying until it answers')),
      output,
    ).toHaveLength(1);
  });
});

describe('a service that cannot start', () => {
  it('a taken port: one line, exit 1, and no consumer left in the group', async () => {
    const taken = net.createServer();
    await new Promise<void>((resolve) => taken.listen(0, '127.0.0.1', resolve));
    const address = taken.address();
    const port = typeof address === 'object' && address ? address.port : 0;
    try {
      const env = isolatedServiceEnv(ctx.server.url);
      const run = await timed(['serve'], { ...env, PORT: String(port) });
      expect(run.code, run.output).toBe(1);
      expect(plainLines(run.output), run.output).toEqual([
        `redsource: cannot listen on 127.0.0.1:${port}: the port is in use (another redsource, or another program): stop it or set PORT`,
      ]);
      for (const stream of [env.STREAM_UPDATES, env.STREAM_ACTIVITY, env.STREAM_FRIENDS]) {
        const consumers = await ctx.redis.xinfo('CONSUMERS', stream, env.REDSOURCE_GROUP).catch(() => []);
        expect(consumers, stream).toEqual([]);
      }
    } finally {
      await new Promise((resolve) => taken.close(resolve));
    }
  });
});
