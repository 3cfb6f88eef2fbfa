import { spawn } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { isolatedServiceEnv, ROOT, runCli, cliChildren } from '../../../test/support/cli.ts';
import { freePort, useTestRedis } from '../../../test/support/redis.ts';

/** Issue 10, the CLI: help, usage errors (exit 2), `--users` checked as the API checks ids, JSON clean on stdout. */
const ctx = useTestRedis();
const children = cliChildren();

/** Runs `redsource <args>` to its end; stdout and stderr apart. */
async function cli(
  args: string[],
  env: Record<string, string> = {},
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const run = runCli(args, env);
  children.push(run);
  let stdout = '';
  let stderr = '';
  run.child.stdout?.on('data', (d: Buffer) => (stdout += d.toString()));
  run.child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
  const code = await run.exited;
  return { code, stdout, stderr };
}

/** An address where no Redis answers: a command that got as far as Redis would exit 1, not 2. */
const noRedis = async () => ({ REDIS_URL: `redis://127.0.0.1:${await freePort()}` });

describe('redsource help and usage errors', { timeout: 60_000 }, () => {
  it('--help lists every command and the exit codes; <command> --help shows its options; both exit 0 on stdout', async () => {
    const all = await cli(['--help']);
    expect(all.code, all.stderr).toBe(0);
    for (const command of ['serve', 'api', 'process', 'replay', 'seed', 'status', 'dlq'])
      expect(all.stdout).toMatch(new RegExp(`^  ${command}\\b`, 'm'));
    expect(all.stdout).toMatch(/Exit codes: 0 .*1 failed.*2 bad command line/s);

    const replay = await cli(['replay', '--help']);
    expect(replay.code).toBe(0);
    expect(replay.stdout).toMatch(/^Usage: redsource replay \[options\]/);
    expect(replay.stdout).toMatch(/--users <ids>/);
    expect(replay.stdout).toMatch(/--wait/);

    const list = await cli(['dlq', 'list', '--help']);
    expect(list.code).toBe(0);
    expect(list.stdout).toMatch(/^Usage: redsource dlq list \[options\] \[stream\]/);
  });

  it('an unknown option, an unknown command or no command: one error line, then the usage, exit 2, nothing run', async () => {
    const env = await noRedis();
    const option = await cli(['status', '--bogus'], env);
    expect(option.code, option.stderr).toBe(2);
    expect(option.stdout).toBe('');
    expect(option.stderr.split('\n')[0]).toBe("redsource: unknown option '--bogus'");
    expect(option.stderr).toContain('Usage: redsource status [options]');
    expect(option.stderr).not.toMatch(/\n\s+at /);

    const command = await cli(['stauts'], env);
    expect(command.code, command.stderr).toBe(2);
    expect(command.stderr.split('\n')[0]).toMatch(/^redsource: unknown command 'stauts'/);
    expect(command.stderr).toContain('Usage: redsource <command> [options]');

    const none = await cli([], env);
    expect(none.code).toBe(2);
    expect(none.stderr).toContain('Usage: redsource <command> [options]');

    const missing = await cli(['dlq', 'show', 'user_updates'], env);
    expect(missing.code, missing.stderr).toBe(2);
    expect(missing.stderr.split('\n')[0]).toBe("redsource: missing required argument 'id'");
  });

  it("replay --users with an id the API refuses ('a:b', '') is one error line and replay's usage, exit 2, before Redis is asked", async () => {
    const env = await noRedis();
    for (const users of ['a:b', '1,,2', '']) {
      const run = await cli(['replay', '--users', users], env);
      expect(run.code, run.stderr).toBe(2);
      const [first, blank, usage] = run.stderr.split('\n');
      expect(first).toMatch(
        /^redsource: option '--users <ids>' argument .* is invalid\. .*1-64 characters from A-Z, a-z, 0-9, _ and -/,
      );
      expect([blank, usage]).toEqual(['', 'Usage: redsource replay [options]']);
    }
    const retry = await cli(['dlq', 'retry', 'user_updates'], env);
    expect(retry.code).toBe(2);
    expect(retry.stderr.trim()).toBe('redsource: dlq retry takes a dead letter id or --all (one of them)');
  });

  it('`pnpm exec redsource status --json` and `dlq list --json` print JSON alone on stdout (no pnpm banner)', async () => {
    const env = { ...process.env, ...isolatedServiceEnv(ctx.server.url), LOG_LEVEL: 'info' };
    const pnpmExec = (args: string[]) =>
      new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
        const child = spawn('npx', ['-y', 'pnpm@9', 'exec', 'redsource', ...args], {
          cwd: ROOT,
          env,
          stdio: ['ignore', 'pipe', 'pipe'],
        });
        let stdout = '';
        let stderr = '';
        child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
        child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
        child.once('exit', (code) => resolve({ code, stdout, stderr }));
      });
    const status = await pnpmExec(['status', '--json']);
    expect(status.code, status.stderr).toBe(0);
    const rows = JSON.parse(status.stdout) as { stream: string }[];
    expect(rows.map((r) => r.stream)).toEqual([env.STREAM_UPDATES, env.STREAM_ACTIVITY, env.STREAM_FRIENDS]);
    const dlq = await pnpmExec(['dlq', 'list', '--json']);
    expect(dlq.code, dlq.stderr).toBe(0);
    expect(JSON.parse(dlq.stdout)).toEqual([]);
  });

  it('status and dlq list print tables', async () => {
    const env = isolatedServiceEnv(ctx.server.url);
    await ctx.redis.xadd(env.STREAM_UPDATES, '*', 'user_id', '1', 'no_type_here', 'x');
    const replay = await cli(['replay'], env);
    expect(replay.code, replay.stderr).toBe(0);
    const status = await cli(['status'], env);
    expect(status.code, status.stderr).toBe(0);
    expect(status.stdout).toMatch(new RegExp(`│ ${env.STREAM_UPDATES} +│ 1 +│`));
    const list = await cli(['dlq', 'list'], env);
    expect(list.stdout).toMatch(/│ stream +│ dead letter +│ entry +│ dead-lettered at +│ reason/);
    expect(list.stdout).toMatch(new RegExp(`│ ${env.STREAM_UPDATES} +│ \\d+-\\d+ +│ \\d+-\\d+ +│ \\d{4}-.*│ RS_`));
  });
});
