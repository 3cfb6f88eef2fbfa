import { describe, expect, it } from 'vitest';
import {
  InvalidEventStoreOptionsError,
  RedisEventStore,
  eventStoreKeys,
  type EventInput,
  type IdempotencySettingsInput,
} from '@redsource/event-store';
import { profileCatalog, type ProfileStreams } from '../../../apps/profile-api/src/domain/events.ts';
import { unique, useTestRedis } from '../../../test/support/redis.ts';

const ctx = useTestRedis();

function isolated(idempotency?: IdempotencySettingsInput) {
  const streams: ProfileStreams = {
    updates: unique('user_updates'),
    activity: unique('user_activity'),
    friends: unique('user_friends'),
  };
  const store = new RedisEventStore({
    redis: ctx.redis,
    catalog: profileCatalog(streams),
    ...(idempotency ? { idempotency } : {}),
  });
  return { stream: streams.activity, store };
}

const kick = (userId: string, id: string): EventInput => ({ type: 'kick', data: { userId }, metadata: { id } });

/** Sizes of the two bookkeeping keys of the idempotency window. */
async function remembered(stream: string) {
  const [ids, byAge] = await Promise.all([
    ctx.redis.hlen(eventStoreKeys.eventIds(stream)),
    ctx.redis.zcard(eventStoreKeys.eventIdsByAge(stream)),
  ]);
  return { ids, byAge };
}

describe('the idempotency window: appended event ids are remembered for a bounded time and count', () => {
  it('remembers at most maxIds ids however many are appended, and a resend inside the window is still a duplicate', async () => {
    const { stream, store } = isolated({ maxIds: 100 });
    for (let batch = 0; batch < 50; batch++) {
      await store.append(
        stream,
        Array.from({ length: 100 }, (_, i) => kick(String(i % 7), `e-${batch}-${i}`)),
      );
    }
    expect(await ctx.redis.xlen(stream)).toBe(5_000);
    expect(await remembered(stream)).toEqual({ ids: 100, byAge: 100 });
    // The newest 100 are inside the window: their resend is not appended again.
    const original = await store.append(stream, kick('1', 'e-49-50'));
    const resent = await store.append(stream, [kick('1', 'e-49-50'), kick('2', 'e-49-99')]);
    expect(resent.duplicates).toEqual([0, 1]);
    expect(resent.entryIds[0]).toBe(original.entryIds[0]);
    expect(await ctx.redis.xlen(stream)).toBe(5_000);
  });

  it('appends again a resend older than the window (by count): it is a new entry', async () => {
    const { stream, store } = isolated({ maxIds: 10 });
    const first = await store.append(stream, kick('1', 'old'));
    for (let i = 0; i < 10; i++) await store.append(stream, kick('1', `later-${i}`));
    const again = await store.append(stream, kick('1', 'old'));
    expect(again.duplicates).toEqual([]);
    expect(again.entryIds[0]).not.toBe(first.entryIds[0]);
    expect(await ctx.redis.xlen(stream)).toBe(12);
    // Remembered again from its new append on.
    expect((await store.append(stream, kick('1', 'old'))).duplicates).toEqual([0]);
  });

  it('forgets an id windowMs after its append: a resend inside is a duplicate, one after is appended again', async () => {
    const { stream, store } = isolated({ windowMs: 1_000 });
    const first = await store.append(stream, kick('1', 'timed'));
    expect((await store.append(stream, kick('1', 'timed'))).entryIds).toEqual(first.entryIds);
    await new Promise((r) => setTimeout(r, 1_100));
    const again = await store.append(stream, kick('1', 'timed'));
    expect(again.duplicates).toEqual([]);
    expect(await ctx.redis.xlen(stream)).toBe(2);
    // Ids past the window are trimmed by the next append, not kept.
    await store.append(stream, kick('1', 'other'));
    await new Promise((r) => setTimeout(r, 1_100));
    await store.append(stream, kick('1', 'newest'));
    expect(await remembered(stream)).toEqual({ ids: 1, byAge: 1 });
  });

  it('catches up when the window is made smaller: each append forgets more than it adds', async () => {
    const { stream, store } = isolated({ maxIds: 5_000 });
    for (let batch = 0; batch < 5; batch++)
      await store.append(
        stream,
        Array.from({ length: 1_000 }, (_, i) => kick('1', `b${batch}-${i}`)),
      );
    expect((await remembered(stream)).ids).toBe(5_000);
    const smaller = new RedisEventStore({ redis: ctx.redis, catalog: store.catalog, idempotency: { maxIds: 10 } });
    for (let i = 0; i < 6; i++) await smaller.append(stream, kick('1', `s-${i}`));
    expect(await remembered(stream)).toEqual({ ids: 10, byAge: 10 });
  });

  it('validates the settings, naming the bad one', () => {
    const catalog = profileCatalog({ updates: 'u', activity: 'a', friends: 'f' });
    expect(() => new RedisEventStore({ redis: ctx.redis, catalog, idempotency: { windowMs: 10 } })).toThrow(
      InvalidEventStoreOptionsError,
    );
    expect(() => new RedisEventStore({ redis: ctx.redis, catalog, idempotency: { maxIds: 0 } })).toThrow(
      /idempotency\.maxIds/,
    );
    expect(new RedisEventStore({ redis: ctx.redis, catalog }).idempotency).toEqual({
      windowMs: 86_400_000,
      maxIds: 100_000,
    });
  });
});
