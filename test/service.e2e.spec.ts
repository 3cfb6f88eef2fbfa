import { afterEach, describe, expect, it } from 'vitest';
import { eventually, freePort, useTestRedis } from './support/redis.ts';
import { isolatedServiceEnv, runCli, type CliProcess } from './support/cli.ts';

const ctx = useTestRedis();
const children: CliProcess[] = [];

afterEach(async () => {
  for (const c of children.splice(0)) {
    c.child.kill('SIGKILL');
    await c.exited;
  }
});

/** Stream and key names of this test only, as the service's configuration. */
const isolatedEnv = () => isolatedServiceEnv(ctx.server.url);

async function serve(env: Record<string, string>): Promise<{ base: string; cli: CliProcess }> {
  const port = await freePort();
  const cli = runCli(['serve'], { ...env, PORT: String(port), HOST: '127.0.0.1' });
  children.push(cli);
  const base = `http://127.0.0.1:${port}`;
  const up = await eventually(
    async () => (await fetch(`${base}/healthz`).catch(() => undefined))?.ok === true,
    20_000,
    100,
  );
  if (!up) throw new Error(`service did not come up:\n${cli.output()}`);
  return { base, cli };
}

const getJson = async (url: string) => {
  const res = await fetch(url);
  return { status: res.status, body: (await res.json()) as Record<string, unknown> };
};

// Each case starts the CLI as a child process (tsx compiles on start): allow for a loaded machine.
describe('the profile service, end to end', { timeout: 90_000 }, () => {
  it("serves the seed document's five raw XADDs as Duffy Duck and Bugs Bunny", async () => {
    const env = isolatedEnv();
    const { base } = await serve(env);
    // Exactly what the seed document sends, as a plain client sends it.
    await ctx.redis.xadd(
      env.STREAM_UPDATES,
      '*',
      'user_id',
      '1',
      'command',
      'register',
      'name',
      'Duffy',
      'surename',
      'Duck',
    );
    await ctx.redis.xadd(
      env.STREAM_UPDATES,
      '*',
      'user_id',
      '2',
      'command',
      'register',
      'name',
      'Bugs',
      'surename',
      'Bunny',
    );
    await ctx.redis.xadd(env.STREAM_ACTIVITY, '*', 'user_id', '1', 'command', 'kick', 'object', 'Bugs');
    await ctx.redis.xadd(env.STREAM_ACTIVITY, '*', 'user_id', '1', 'command', 'dislike', 'object', 'Bugs face');
    await ctx.redis.xadd(env.STREAM_FRIENDS, '*', 'user_id', '1', 'command', 'remove', 'friend_id', '2');
    const duffy = await eventually(async () => {
      const r = await getJson(`${base}/users/1/profile`);
      return (r.body['activity'] as Record<string, number> | undefined)?.['dislike'] === 1 ? r : undefined;
    });
    expect(duffy?.body).toEqual({
      id: '1',
      name: 'Duffy',
      surname: 'Duck',
      friends: [],
      likedPages: [],
      activity: { kick: 1, dislike: 1 },
    });
    expect((await getJson(`${base}/users/2/profile`)).body).toMatchObject({ id: '2', name: 'Bugs', surname: 'Bunny' });
    expect((await getJson(`${base}/users/424242/profile`)).status).toBe(404);
    expect((await getJson(`${base}/users/bad:id/profile`)).status).toBe(400);
  });

  it('resumes after a restart with nothing lost or doubled, and replay rebuilds the same snapshots', async () => {
    const env = { ...isolatedEnv(), REDSOURCE_CONSUMER: 'only-one' };
    const first = await serve(env);
    for (let i = 0; i < 50; i++) await ctx.redis.xadd(env.STREAM_ACTIVITY, '*', 'user_id', '5', 'command', 'poke');
    await ctx.redis.xadd(env.STREAM_UPDATES, '*', 'user_id', '5', 'command', 'register', 'name', 'Porky');
    const pokes = async (base: string) =>
      ((await getJson(`${base}/users/5/profile`)).body['activity'] as Record<string, number> | undefined)?.['poke'];
    expect(await eventually(async () => (await pokes(first.base)) === 50)).toBe(true);
    first.cli.child.kill('SIGTERM');
    expect(await first.cli.exited).toBe(0);

    // Appended while no processor runs.
    for (let i = 0; i < 30; i++) await ctx.redis.xadd(env.STREAM_ACTIVITY, '*', 'user_id', '5', 'command', 'poke');
    const second = await serve(env);
    expect(await eventually(async () => (await pokes(second.base)) === 80)).toBe(true);
    const live = await ctx.redis.hgetall(`${env.SNAPSHOT_PREFIX}5`);

    const replay = runCli(['replay'], env);
    children.push(replay);
    expect(await replay.exited).toBe(0);
    expect(replay.output()).toMatch(/replayed 81 entries/);
    const rebuilt = await ctx.redis.hgetall(`${env.SNAPSHOT_PREFIX}5`);
    // Bookkeeping aside (the change counter, the rebuild's mark), the rebuilt snapshot is the live one.
    // `_inc` too: a rebuilt hash is another incarnation by design (readers caching by it read it anew).
    expect({ ...rebuilt, _rev: 'x', _rebuild: 'x', _inc: 'x' }).toEqual({
      ...live,
      _rev: 'x',
      _rebuild: 'x',
      _inc: 'x',
    });
    expect(await pokes(second.base)).toBe(80);
  });

  it('refuses a bad setting with the variable named, before touching Redis', async () => {
    const cli = runCli(['serve'], { ...isolatedEnv(), PORT: 'eighty' });
    children.push(cli);
    expect(await cli.exited).toBe(1);
    expect(cli.output()).toMatch(/PORT/);
  });
});
