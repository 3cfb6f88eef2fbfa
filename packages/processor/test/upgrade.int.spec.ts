import { afterEach, describe, expect, it } from 'vitest';
import type { StreamProcessor } from '../src/index.ts';
import { PartitionedStreams } from '../src/partitions/streams.ts';
import { unappliedPerPartition } from '../../../test/support/backlog.ts';
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
    for (let i = 0; i < 40; i++)
      ids.push(String(await ctx.redis.xadd(stream, '*', 'user_id', String(i % 4), 'command', 'poke', 'page', 'p')));
    // The old processors: the group delivered 30 entries to a consumer that is gone, acked none,
    // and the old cursor says the first 20 were applied (their effect is in the snapshots already).
    await ctx.redis.xgroup('CREATE', stream, setup.group, '0');
    await ctx.redis.xreadgroup('GROUP', setup.group, 'old-consumer', 'COUNT', 30, 'STREAMS', stream, '>');
    const oldCursor = ids[19] as string;
    await ctx.redis.set(setup.snapshots.cursorKey(stream), oldCursor);
    for (let user = 0; user < 4; user++)
      await ctx.redis.hset(setup.snapshots.key(String(user)), '_exists', '1', 'c:poke', '5', '_rev', '5');

    const processor = setup.processor(ctx.server.client());
    running.push(processor);
    await processor.start();
    // 20 entries after the old cursor, 5 per user: each user ends with 10 pokes, not 15 (twice) or 5 (lost).
    const pokes = async () =>
      Promise.all(
        [0, 1, 2, 3].map(async (u) => Number(await ctx.redis.hget(setup.snapshots.key(String(u)), 'c:poke'))),
      );
    expect(await eventually(async () => ((await pokes()).every((n) => n === 10) ? true : undefined), 10_000)).toBe(
      true,
    );
    const [summary] = (await ctx.redis.xpending(stream, setup.group)) as [number];
    expect(summary).toBe(0);
    expect(await ctx.redis.exists(setup.snapshots.cursorKey(stream))).toBe(0);
    expect(await setup.snapshots.totals(stream)).toEqual({ applied: 20, skipped: 0, deadLettered: 0 });
    // Nothing more comes later: each stays at 10.
    await new Promise((r) => setTimeout(r, 300));
    expect(await pokes()).toEqual([10, 10, 10, 10]);
    expect(await unappliedPerPartition(ctx.redis, setup.snapshots, stream, 12, ['user_id'])).toEqual(
      Array.from({ length: 12 }, () => 0),
    );
  });

  it("prepare-stream.lua adopts the old cursor once: every partition starts there, the old consumers' pending entries are acked, the old cursor is deleted", async () => {
    const setup = isolatedProfileSetup(ctx.redis);
    const stream = setup.streams.activity;
    const group = setup.group;
    const ids: string[] = [];
    for (let i = 0; i < 2_500; i += 500) {
      const pipeline = ctx.redis.pipeline();
      for (let j = 0; j < 500; j++) pipeline.xadd(stream, '*', 'user_id', String((i + j) % 7), 'command', 'poke');
      for (const [error, id] of (await pipeline.exec()) ?? []) {
        if (error) throw error;
        ids.push(String(id));
      }
    }
    // Two old consumers left 2,100 entries pending (more than one XPENDING page); the old cursor says 1,500 are applied.
    await ctx.redis.xgroup('CREATE', stream, group, '0');
    await ctx.redis.xreadgroup('GROUP', group, 'old-1', 'COUNT', 1_200, 'STREAMS', stream, '>');
    await ctx.redis.xreadgroup('GROUP', group, 'old-2', 'COUNT', 1_000, 'STREAMS', stream, '>');
    await ctx.redis.xack(stream, group, ...ids.slice(0, 100));
    const oldCursor = ids[1_499] as string;
    const oldKey = setup.snapshots.cursorKey(stream);
    await ctx.redis.set(oldKey, oldCursor);
    const partitionKey = (p: number) => setup.snapshots.cursorKey(stream, p);
    const cursors = () => ctx.redis.mget(...Array.from({ length: 12 }, (_, p) => partitionKey(p)));

    const prepared = new PartitionedStreams(ctx.redis, group, 12);
    expect(await prepared.prepare(stream, '0', oldKey, partitionKey)).toEqual({ adopted: oldCursor });
    expect(await cursors()).toEqual(Array.from({ length: 12 }, () => oldCursor));
    expect(((await ctx.redis.xpending(stream, group)) as [number])[0]).toBe(0);
    expect(await ctx.redis.exists(oldKey)).toBe(0);
    // Left to apply: exactly the entries after the old cursor, each in its own partition.
    const left = await unappliedPerPartition(ctx.redis, setup.snapshots, stream, 12, ['user_id']);
    expect(left.reduce((a, b) => a + b, 0)).toBe(1_000);

    // Once: a partition that moved on is not set back by another processor preparing the stream.
    await ctx.redis.set(partitionKey(3), ids[2_000] as string);
    expect(await prepared.prepare(stream, '0', oldKey, partitionKey)).toEqual({ adopted: undefined });
    expect((await cursors())[3]).toBe(ids[2_000]);
    expect((await cursors())[4]).toBe(oldCursor);
    expect(await ctx.redis.xlen(stream)).toBe(2_500);
  });
});
