import { describe, expect, it } from 'vitest';
import { processorKeys } from '@redsource/processor';
import { isolatedServiceEnv, runCli, cliChildren } from '../../../test/support/cli.ts';
import { useTestRedis } from '../../../test/support/redis.ts';

/** Issue 10: `redsource replay` knows its total before it starts, counts entries dead-lettered before instead of warning, and `--users` counts those users' work. */
const ctx = useTestRedis();
const children = cliChildren();

const USERS = 10;
const LIKES = 3_000;
const POISON = 5;

async function replay(env: Record<string, string>, args: string[] = []) {
  const run = runCli(['replay', ...args], { ...env, CI: 'true' });
  children.push(run);
  const code = await run.exited;
  const lines = run.output().split('\n');
  const warnings = lines.filter((l) => l.startsWith('{') && (JSON.parse(l) as { level: number }).level >= 40);
  return { code, output: run.output(), warnings, summary: lines.find((l) => l.startsWith('replayed')) ?? '' };
}

describe('redsource replay', { timeout: 60_000 }, () => {
  it('writes its total with its first state; warns once per bad entry, counts ones dead-lettered before; --users counts only those users', async () => {
    const env = isolatedServiceEnv(ctx.server.url);
    const pipeline = ctx.redis.pipeline();
    for (let i = 0; i < USERS; i++)
      pipeline.xadd(env.STREAM_UPDATES, '*', 'user_id', `u${i}`, 'command', 'register', 'name', `N${i}`);
    for (let i = 0; i < LIKES; i++) {
      pipeline.xadd(env.STREAM_ACTIVITY, '*', 'user_id', `u${i % USERS}`, 'command', 'like', 'object', `P${i}`);
      if (i % (LIKES / POISON) === 0) pipeline.xadd(env.STREAM_ACTIVITY, '*', 'user_id', 'u0', 'no_type_here', 'x');
    }
    await pipeline.exec();
    const total = USERS + LIKES + POISON;

    // What the dashboard reads (the rebuild state): its first write already carries the total.
    const stateKey = processorKeys.rebuild('profiles', env.SNAPSHOT_PREFIX);
    const monitor = await ctx.redis.duplicate().monitor();
    const stateWrites: string[][] = [];
    monitor.on('monitor', (_time: string, args: string[]) => {
      if (args.includes(stateKey) && args.includes('phase') && args[0]?.toLowerCase() !== 'hget')
        stateWrites.push(args);
    });
    const first = await replay(env);
    monitor.disconnect();
    expect(first.code, first.output).toBe(0);
    expect(stateWrites.length, first.output).toBeGreaterThan(0);
    const firstWrite = stateWrites[0] ?? [];
    expect(firstWrite[firstWrite.indexOf('total') + 1], firstWrite.join(' ')).toBe(String(total));
    expect(first.output).toMatch(new RegExp(`^replay building: 0/${total} entries`, 'm'));
    expect(first.warnings, first.output).toHaveLength(POISON);
    expect(first.summary).toMatch(
      new RegExp(
        `^replayed ${total} entries \\(${USERS + LIKES} applied, ${POISON} dead-lettered \\(0 of them already before\\)\\)`,
      ),
    );

    // The same entries again: dead-lettered before, so counted in the summary, not one WARN line each.
    const again = await replay(env);
    expect(again.code, again.output).toBe(0);
    expect(again.warnings, again.output).toEqual([]);
    expect(again.summary).toMatch(
      new RegExp(
        `^replayed ${total} entries \\(${USERS + LIKES} applied, ${POISON} dead-lettered \\(${POISON} of them already before\\)\\)`,
      ),
    );

    const some = await replay(env, ['--users', 'u1,u2']);
    expect(some.code, some.output).toBe(0);
    expect(some.summary).toMatch(new RegExp(`\\(${2 + (2 * LIKES) / USERS} applied to users u1,u2, `));
    const nobody = await replay(env, ['--users', 'nobody']);
    expect(nobody.summary).toMatch(/\(0 applied to users nobody, /);
    expect(nobody.summary).toMatch(/switched 0 snapshots/);
  });
});
