import { describe, expect, it } from 'vitest';
import { loadConfig } from '../src/config.ts';
import { cliChildren, runCli } from '../../../test/support/cli.ts';
import { freePort } from '../../../test/support/redis.ts';

const children = cliChildren();

/** Runs the CLI to its end; stdout and stderr together. */
async function cli(
  args: string[],
  env: Record<string, string>,
): Promise<{ code: number | null | 'hung'; output: string }> {
  const run = runCli(args, env);
  children.push(run);
  const code = await Promise.race([run.exited, new Promise<'hung'>((r) => setTimeout(() => r('hung'), 20_000))]);
  return { code, output: run.output() };
}

/** The lines that are not pino's JSON log lines. */
const plainLines = (output: string) => output.split('\n').filter((l) => l.trim() !== '' && !l.startsWith('{'));

describe('CLI failures: one clear line, no stack unless LOG_LEVEL=debug', () => {
  it("a malformed REDIS_URL ('%zz' in the password) is a configuration error naming the variable", async () => {
    const url = 'redis://app:pa%zzword@127.0.0.1:6379';
    expect(() => loadConfig({ REDIS_URL: url })).toThrow(/REDIS_URL: .*percent-encoding/);
    const run = await cli(['status'], { REDIS_URL: url });
    expect(run.code, run.output).toBe(1);
    expect(plainLines(run.output), run.output).toEqual([
      expect.stringMatching(/^redsource: Invalid configuration: REDIS_URL: .*%25/),
    ]);
    expect(run.output).not.toMatch(/URIError|\n\s+at /);
    expect(run.output).not.toContain('pa%zzword');
  });

  it('an unreachable Redis, and an unknown option, are one line each', async () => {
    const port = await freePort();
    const down = await cli(['status'], { REDIS_URL: `redis://127.0.0.1:${port}` });
    expect(down.code, down.output).toBe(1);
    expect(plainLines(down.output), down.output).toEqual([
      expect.stringMatching(
        /^redsource: Redis at 127\.0\.0\.1:\d+ is not reachable: .*: check REDIS_URL \/ that Redis runs$/,
      ),
    ]);

    // A usage error: its one line, then the command's usage (cli-usage.e2e.spec.ts), exit 2.
    const option = await cli(['status', '--bogus'], { REDIS_URL: `redis://127.0.0.1:${port}` });
    expect(option.code, option.output).toBe(2);
    expect(plainLines(option.output)[0], option.output).toBe("redsource: unknown option '--bogus'");
    expect(option.output).not.toMatch(/\n\s+at /);
  });

  it('shows the stack under LOG_LEVEL=debug', async () => {
    const port = await freePort();
    const run = await cli(['status'], { REDIS_URL: `redis://127.0.0.1:${port}`, LOG_LEVEL: 'debug' });
    expect(run.code, run.output).toBe(1);
    expect(run.output).toMatch(
      /^redsource: Redis at 127\.0\.0\.1:\d+ is not reachable: .*: check REDIS_URL \/ that Redis runs$/m,
    );
    expect(run.output).toMatch(/\n\s+at /);
  });
});
