import { afterEach, describe, expect, it } from 'vitest';
import type { StreamProcessor } from '../src/index.ts';
import { isolatedProfileSetup } from '../../../test/support/profile-setup.ts';
import { eventually, useTestRedis } from '../../../test/support/redis.ts';

const ctx = useTestRedis();
const running: StreamProcessor[] = [];
afterEach(async () => {
  await Promise.all(running.splice(0).map((p) => p.stop()));
});

/**
 * A stream processed before partitions left: one cursor for the whole stream, and entries delivered
 * to consumers of the old kind that never acked them (some applied by the old gap fill, some not).
 * The partitioned processor must go on from exactly there: nothing applied twice, nothing lost.
 */
describe('upgrading from one cursor per stream', () => {
  it('applies exactly the entries after the old cursor, once, and leaves the group with nothing pending', async () => {
    const setup = isolatedProfileSetup(ctx.redis);
    const stream = setup.streams.activity;
    const ids: string[] = [];
    for (let i = 0; i < 40; i++) ids.push(String(await ctx.redis.xadd(stream, '*', 'user_id', String(i % 4), 'command', 'poke', 'page', 'p')));
    // The old processors: the group delivered 30 entries to a consumer that is gone, acked none,
    // and the old cursor says the first 20 were applied (their effect is in the snapshots already).
    await ctx.redis.xgroup('CREATE', stream, setup.group, '0');
    await ctx.redis.xreadgroup('GROUP', setup.group, 'old-consumer', 'COUNT', 30, 'STREAMS', stream, '>');
    const oldCursor = ids[19] as string;
    await ctx.redis.set(setup.snapshots.cursorKey(stream), oldCursor);
    for (let user = 0; user < 4; user++) await ctx.redis.hset(setup.snapshots.key(String(user)), '_exists', '1', 'c:poke', '5', '_rev', '5');

    const processor = setup.processor(ctx.server.client());
    running.push(processor);
    await processor.start();
    // 20 entries after the old cursor, 5 per user: each user ends with 10 pokes, not 15 (twice) or 5 (lost).
    const pokes = async () => Promise.all([0, 1, 2, 3].map(async (u) => Number(await ctx.redis.hget(setup.snapshots.key(String(u)), 'c:poke'))));
    expect(await eventually(async () => ((await pokes()).every((n) => n === 10) ? true : undefined), 10_000)).toBe(true);
    const [summary] = (await ctx.redis.xpending(stream, setup.group)) as [number];
    expect(summary).toBe(0);
    expect(await ctx.redis.exists(setup.snapshots.cursorKey(stream))).toBe(0);
    expect((await setup.snapshots.totals(stream)).applied).toBe(20);
    // Nothing more comes later: each stays at 10.
    await new Promise((r) => setTimeout(r, 300));
    expect(await pokes()).toEqual([10, 10, 10, 10]);
  });
});
