import { describe, expect, it } from 'vitest';
import { processorKeys, replay, trimApplied } from '@redsource/processor';
import { snapshotKeys } from '@redsource/snapshot-store';
import { eventually, useTestRedis } from '../../../test/support/redis.ts';
import { isolatedProfileSetup } from '../../../test/support/profile-setup.ts';

const ctx = useTestRedis();

const idsOf = (entries: [string, string[]][]) => entries.map(([id]) => id);

describe('the dead-lettered-ids set is trimmed with the stream', () => {
  it('stays bounded under retention however many entries are dead-lettered, each dead-lettered once', async () => {
    const setup = isolatedProfileSetup(ctx.redis);
    const stream = setup.streams.activity;
    const p = ctx.track(
      setup.processor(ctx.server.client(), { retention: true, rebalanceIntervalMs: 50, batchSize: 100 }),
    );
    await p.start();
    let poison = 0;
    const handled = async () => {
      const totals = await setup.snapshots.totals(stream);
      return totals.applied + totals.deadLettered;
    };
    // Retention runs every 5 s: each round waits for one trim.
    const ROUNDS = 3;
    const PER_ROUND = 300;
    for (let round = 0; round < ROUNDS; round++) {
      const pipeline = ctx.redis.pipeline();
      for (let i = 0; i < PER_ROUND; i++) {
        // Every other entry is a `like` without its page: dead-lettered (RS_EVENT_INVALID).
        if (i % 2 === 0) pipeline.xadd(stream, '*', 'user_id', String(i % 10), 'command', 'like');
        else pipeline.xadd(stream, '*', 'user_id', String(i % 10), 'command', 'kick');
        if (i % 2 === 0) poison++;
      }
      await pipeline.exec();
      expect(await eventually(async () => (await handled()) === (round + 1) * PER_ROUND, 10_000)).toBe(true);
      // Trimmed with the stream: only ids of entries still in it are kept.
      expect(await eventually(async () => (await ctx.redis.xlen(stream)) <= 1, 8_000, 100)).toBe(true);
      expect(
        await eventually(async () => (await ctx.redis.scard(snapshotKeys.deadLettered(stream))) <= 1, 8_000, 100),
      ).toBe(true);
    }
    expect((await setup.snapshots.totals(stream)).deadLettered).toBe(poison);
    expect(await ctx.redis.xlen(processorKeys.deadLetters(stream))).toBe(poison);
  }, 60_000);

  it('forgets only ids below the trim point: a dead-lettered entry still in the stream stays remembered', async () => {
    const setup = isolatedProfileSetup(ctx.redis);
    const stream = setup.streams.activity;
    const ids: string[] = [];
    for (let i = 0; i < 6; i++) ids.push((await ctx.redis.xadd(stream, '*', 'user_id', '1', 'command', 'like')) ?? '');
    const dead = snapshotKeys.deadLettered(stream);
    await ctx.redis.sadd(dead, ...ids);
    await ctx.redis.xgroup('CREATE', stream, 'done', '$');
    await setup.snapshots.setCursor(stream, ids[3] ?? '');
    expect(await trimApplied(ctx.redis, stream, setup.snapshots)).toBe(ids[3]);
    expect(idsOf(await ctx.redis.xrange(stream, '-', '+'))).toEqual(ids.slice(3));
    expect((await ctx.redis.smembers(dead)).sort()).toEqual(ids.slice(3).sort());
  });
});

describe('a rebuild never applies an entry that was dead-lettered, and never dead-letters one twice', () => {
  it('keeps an entry dead-lettered live (its snapshot key held another type) out of the rebuilt snapshots', async () => {
    const setup = isolatedProfileSetup(ctx.redis);
    const stream = setup.streams.activity;
    await ctx.redis.set(`${setup.keyPrefix}5`, 'not a hash');
    await ctx.redis.xadd(stream, '*', 'user_id', '5', 'command', 'kick');
    await ctx.redis.xadd(stream, '*', 'user_id', '6', 'command', 'kick');
    await ctx.redis.xadd(stream, '*', 'user_id', '7', 'command', 'like');
    const p = ctx.track(setup.processor(ctx.server.client()));
    await p.start();
    expect(await eventually(async () => (await setup.snapshots.totals(stream)).deadLettered === 2)).toBe(true);
    await p.stop();
    await ctx.redis.del(`${setup.keyPrefix}5`);
    await replay({
      redis: ctx.redis,
      eventStore: setup.eventStore,
      snapshots: setup.snapshots,
      handlers: setup.handlers,
    });
    // The dead letter stays the entry's one outcome: not applied by the rebuild, not dead-lettered again.
    expect(await setup.snapshots.read('5')).toBeUndefined();
    expect((await setup.snapshots.read('6'))?.counters['kick']).toBe(1);
    expect(await ctx.redis.xlen(processorKeys.deadLetters(stream))).toBe(2);
  });
});
