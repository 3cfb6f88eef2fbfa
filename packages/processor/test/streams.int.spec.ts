import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { EventCatalog, RedisEventStore } from '@redsource/event-store';
import {
  HandlerRegistry,
  partitionOfSubject,
  processorKeys,
  replay,
  ReplayImpossibleError,
  StreamProcessor,
  trimApplied,
} from '@redsource/processor';
import { SnapshotStore } from '@redsource/snapshot-store';
import { eventually, unique, useTestRedis } from '../../../test/support/redis.ts';

const ctx = useTestRedis();

/** Orders on any stream `<prefix>…`: each `placed` entry counts one order for its customer. */
function ordersSetup(prefix: string) {
  const catalog = new EventCatalog({ [`${prefix}*`]: { schemas: { placed: z.object({ customer: z.string() }) } } });
  const eventStore = new RedisEventStore({ redis: ctx.redis, catalog });
  const snapshots = new SnapshotStore({ redis: ctx.redis, keyPrefix: `${unique('customer')}_` });
  const handlers = new HandlerRegistry().on<{ customer: string }>(`${prefix}*`, 'placed', ({ data }) => ({
    snapshotId: data.customer,
    mutations: [{ op: 'increment', counter: 'orders' }],
  }));
  const processor = (settings: Partial<ConstructorParameters<typeof StreamProcessor>[0]> = {}) => {
    const p = new StreamProcessor({
      redis: ctx.redis,
      eventStore,
      snapshots,
      handlers,
      group: unique('g'),
      blockMs: 50,
      rebalanceIntervalMs: 50,
      discoverIntervalMs: 50,
      ...settings,
    });
    ctx.track(p);
    return p;
  };
  return { eventStore, snapshots, handlers, processor };
}

describe('stream discovery by prefix', () => {
  it('picks up streams that match a registered prefix, including ones that appear after the start', async () => {
    const prefix = `${unique('orders')}:`;
    const { snapshots, processor } = ordersSetup(prefix);
    await ctx.redis.xadd(`${prefix}eu`, '*', 'command', 'placed', 'customer', 'c1');
    const p = processor();
    await p.start();
    expect(await eventually(async () => (await snapshots.read('c1'))?.counters['orders'] === 1)).toBe(true);
    // A stream that did not exist when the processor started.
    await ctx.redis.xadd(`${prefix}us`, '*', 'command', 'placed', 'customer', 'c1');
    await ctx.redis.xadd(`${prefix}us`, '*', 'command', 'placed', 'customer', 'c2');
    expect(
      await eventually(
        async () =>
          (await snapshots.read('c1'))?.counters['orders'] === 2 &&
          (await snapshots.read('c2'))?.counters['orders'] === 1,
      ),
    ).toBe(true);
    expect([...p.streams].sort()).toEqual([`${prefix}eu`, `${prefix}us`]);
    // Keys of another type under the prefix are not streams to consume.
    await ctx.redis.set(`${prefix}note`, 'x');
    await new Promise((r) => setTimeout(r, 200));
    expect(p.streams).not.toContain(`${prefix}note`);
  });
});

describe('replay with prefix handlers', () => {
  it('rebuilds from every stream matching the prefix (never switching over an empty rebuild)', async () => {
    const prefix = `${unique('orders')}:`;
    const { eventStore, snapshots, handlers, processor } = ordersSetup(prefix);
    await ctx.redis.xadd(`${prefix}eu`, '*', 'command', 'placed', 'customer', 'c1');
    await ctx.redis.xadd(`${prefix}us`, '*', 'command', 'placed', 'customer', 'c1');
    await processor().start();
    expect(await eventually(async () => (await snapshots.read('c1'))?.counters['orders'] === 2)).toBe(true);
    const result = await replay({ redis: ctx.redis, eventStore, snapshots, handlers });
    expect(result.done).toBe(2);
    expect((await snapshots.read('c1'))?.counters['orders']).toBe(2);
  });
});

describe('retention', () => {
  it('trims only what every group acknowledged and the snapshots applied, and then refuses to replay', async () => {
    const prefix = `${unique('orders')}:`;
    const stream = `${prefix}eu`;
    const { eventStore, snapshots, handlers, processor } = ordersSetup(prefix);
    for (let i = 0; i < 20; i++) await ctx.redis.xadd(stream, '*', 'command', 'placed', 'customer', 'c1');
    // A second group that has read (and not acked) only part of the stream holds the trim back.
    await ctx.redis.xgroup('CREATE', stream, 'slow', '0');
    const slow = (await ctx.redis.xreadgroup('GROUP', 'slow', 'x', 'COUNT', 5, 'STREAMS', stream, '>')) as [
      string,
      [string, string[]][],
    ][];
    const slowIds = slow[0]?.[1].map(([id]) => id) ?? [];
    await ctx.redis.xack(stream, 'slow', ...slowIds.slice(0, 3));
    const p = processor({ retention: true });
    await p.start();
    expect(await eventually(async () => (await snapshots.read('c1'))?.counters['orders'] === 20)).toBe(true);
    // The oldest entry the slow group still holds is the 4th: everything before it goes, nothing after.
    const trimmed = await eventually(async () => (await ctx.redis.xlen(stream)) === 17);
    // Every partition's cursor must get there, those of partitions with no entry at all too (default 12 partitions, one customer).
    const cursors = await ctx.redis.mget(...Array.from({ length: 12 }, (_, n) => snapshots.cursorKey(stream, n)));
    expect(trimmed, `partition cursors ${JSON.stringify(cursors)}`).toBe(true);
    expect((await ctx.redis.xrange(stream, '-', '+', 'COUNT', 1))[0]?.[0]).toBe(slowIds[3]);
    await expect(
      replay({ redis: ctx.redis, eventStore, snapshots, handlers, streams: [stream] }),
    ).rejects.toBeInstanceOf(ReplayImpossibleError);
    expect(await ctx.redis.get(processorKeys.trimmedBelow(stream))).toBe(slowIds[3]);
  });

  it('never trims past the snapshots cursor, and not at all while a rebuild runs', async () => {
    const prefix = `${unique('orders')}:`;
    const stream = `${prefix}eu`;
    const { snapshots } = ordersSetup(prefix);
    const ids: string[] = [];
    for (let i = 0; i < 10; i++)
      ids.push((await ctx.redis.xadd(stream, '*', 'command', 'placed', 'customer', 'c1')) ?? '');
    await ctx.redis.xgroup('CREATE', stream, 'done', '$');
    await snapshots.setCursor(stream, ids[4] ?? '');
    await ctx.redis.hset(processorKeys.rebuild(snapshots.projection, snapshots.keyPrefix), 'phase', 'building');
    expect(await trimApplied(ctx.redis, stream, snapshots)).toBeUndefined();
    expect(await ctx.redis.xlen(stream)).toBe(10);
    await ctx.redis.del(processorKeys.rebuild(snapshots.projection, snapshots.keyPrefix));
    expect(await trimApplied(ctx.redis, stream, snapshots)).toBe(ids[4]);
    expect(await ctx.redis.xlen(stream)).toBe(6);
  });

  it('on partitions, never trims an entry that its partition has not applied, however far the other partitions are', async () => {
    const prefix = `${unique('orders')}:`;
    const stream = `${prefix}eu`;
    const { snapshots } = ordersSetup(prefix);
    // Two customers in different partitions of two.
    const a = 'a';
    const b = ['b', 'c', 'd', 'e', 'f', 'g'].find((c) => partitionOfSubject(c, 2) !== partitionOfSubject(a, 2)) ?? '';
    const ids: Record<string, string[]> = { [a]: [], [b]: [] };
    for (let i = 0; i < 10; i++) {
      const customer = i % 2 === 0 ? a : b;
      ids[customer]?.push((await ctx.redis.xadd(stream, '*', 'command', 'placed', 'customer', customer)) ?? '');
    }
    // The processors' own group only marks where they started (its last-delivered-id stays at 0-0): it holds nothing back.
    await ctx.redis.xgroup('CREATE', stream, 'g', '0');
    const partitioned = { group: 'g', partitions: 2 };
    // Nothing applied anywhere: nothing to trim.
    expect(await trimApplied(ctx.redis, stream, snapshots, partitioned)).toBeUndefined();
    expect(await ctx.redis.xlen(stream)).toBe(10);
    // a's partition has applied everything, b's only its first two entries: b's third is kept, and all after it.
    await ctx.redis.set(snapshots.cursorKey(stream, partitionOfSubject(a, 2)), ids[a]?.[4] ?? '');
    await ctx.redis.set(snapshots.cursorKey(stream, partitionOfSubject(b, 2)), ids[b]?.[1] ?? '');
    // A cursor is the last position its partition is applied through: the trim keeps it and all after it.
    expect(await trimApplied(ctx.redis, stream, snapshots, partitioned)).toBe(ids[b]?.[1]);
    expect((await ctx.redis.xrange(stream, '-', '+')).map(([id]) => id)).toEqual([
      ids[b]?.[1],
      ids[a]?.[2],
      ids[b]?.[2],
      ids[a]?.[3],
      ids[b]?.[3],
      ids[a]?.[4],
      ids[b]?.[4],
    ]);
  });
});
