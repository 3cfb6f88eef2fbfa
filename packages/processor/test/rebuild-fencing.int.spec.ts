import { describe, expect, it } from 'vitest';
import { RebuildLeaseLostError } from '@redsource/processor';
import { SnapshotStore } from '@redsource/snapshot-store';
import { FencedWrites } from '../src/fenced-writes.ts';
import { tryAcquireRebuildLease } from '../src/rebuild-lease.ts';
import { unique, useTestRedis } from '../../../test/support/redis.ts';
import { rejection } from '../../../test/support/rejection.ts';

/**
 * Every write a rebuild makes goes through a script that first checks, in Redis and atomically with
 * the write, that the rebuild's fencing token still holds the lease. A rebuild paused past its lease
 * and taken over (or cut off until the lease expired) must write nothing, whatever it tries.
 */
const ctx = useTestRedis();
const holder = { host: 'test-host', pid: 4242, startedAt: 1_700_000_000_000 };

/** A lease taken over: `stale` writes with the first holder's token, `current` with its successor's. */
async function takenOver() {
  const keys = { lease: unique('lease'), fence: unique('fence') };
  const first = await tryAcquireRebuildLease(ctx.redis, keys, 60_000, holder);
  // As if the first holder were frozen past its lease: the lease expires and the next rebuild takes it.
  await ctx.redis.del(keys.lease);
  const second = await tryAcquireRebuildLease(ctx.redis, keys, 60_000, holder);
  if (!('token' in first) || !('token' in second)) throw new Error('the lease was not acquired');
  return {
    keys,
    tokens: [first.token, second.token] as const,
    stale: new FencedWrites(ctx.redis, { key: keys.lease, token: first.token }),
    current: new FencedWrites(ctx.redis, { key: keys.lease, token: second.token }),
  };
}

const lost = async (write: Promise<unknown>) => expect(await rejection(write)).toBeInstanceOf(RebuildLeaseLostError);

describe('fencing: a rebuild that lost its lease writes nothing', () => {
  it('gives every new holder a higher fencing token, and refuses a second holder while the lease lives', async () => {
    const { keys, tokens } = await takenOver();
    expect(Number(tokens[1])).toBeGreaterThan(Number(tokens[0]));
    const third = await tryAcquireRebuildLease(ctx.redis, keys, 60_000, { ...holder, pid: 7 });
    expect(third).toEqual({ heldBy: { ...holder, token: tokens[1] } });
  });

  it('SET and DEL (hold, release, cursors, shadow resets, the end of a rebuild)', async () => {
    const { stale, current } = await takenOver();
    const key = unique('cursor');
    await ctx.redis.set(key, '5-0');
    await lost(stale.set(key, '9-0'));
    await lost(stale.set(key, ''));
    expect(await ctx.redis.get(key)).toBe('5-0');
    await current.set(key, '9-0');
    expect(await ctx.redis.get(key)).toBe('9-0');
    await current.set(key, '');
    expect(await ctx.redis.exists(key)).toBe(0);
  });

  it('HSET of the rebuild state', async () => {
    const { stale, current } = await takenOver();
    const key = unique('state');
    await lost(stale.hset(key, { phase: 'switching' }));
    expect(await ctx.redis.exists(key)).toBe(0);
    await current.hset(key, { phase: 'switching', done: 3 });
    expect(await ctx.redis.hgetall(key)).toEqual({ phase: 'switching', done: '3' });
  });

  it('the RENAME of a shadow hash over its live key', async () => {
    const { stale, current } = await takenOver();
    const [shadow, live] = [unique('shadow'), unique('live')];
    await ctx.redis.hset(shadow, 'f:name', '"new"');
    await ctx.redis.hset(live, 'f:name', '"old"');
    await lost(stale.switchSnapshots([[shadow, live]], 'r1'));
    expect(await ctx.redis.hgetall(live)).toEqual({ 'f:name': '"old"' });
    expect(await ctx.redis.exists(shadow)).toBe(1);
    expect(await current.switchSnapshots([[shadow, live]], 'r1')).toBe(1);
    expect(await ctx.redis.hgetall(live)).toEqual({ 'f:name': '"new"', _rebuild: 'r1' });
    expect(await ctx.redis.exists(shadow)).toBe(0);
  });

  it('deleting live snapshots the rebuild did not switch (and clearing an abandoned shadow)', async () => {
    const { stale, current } = await takenOver();
    const [unswitched, switched] = [unique('live'), unique('live')];
    await ctx.redis.hset(unswitched, '_exists', '1');
    await ctx.redis.hset(switched, '_exists', '1', '_rebuild', 'r1');
    await lost(stale.unlinkSnapshots([unswitched, switched], 'r1'));
    await lost(stale.unlinkSnapshots([unswitched, switched], undefined));
    expect(await ctx.redis.exists(unswitched, switched)).toBe(2);
    await current.unlinkSnapshots([unswitched, switched], 'r1');
    expect(await ctx.redis.exists(unswitched)).toBe(0);
    expect(await ctx.redis.exists(switched)).toBe(1);
    await current.unlinkSnapshots([switched], undefined);
    expect(await ctx.redis.exists(switched)).toBe(0);
  });

  it('the shadow applies (apply-batch with a fence)', async () => {
    const { stale, current } = await takenOver();
    const stream = unique('stream');
    const store = new SnapshotStore({
      redis: ctx.redis,
      keyPrefix: `${unique('shadow')}_`,
      projection: 'profiles:rebuild',
    });
    const id = String(await ctx.redis.xadd(stream, '*', 'n', '1'));
    const batch = {
      stream,
      deadLetterStream: unique('dead'),
      entries: [{ entryId: id, changes: [{ snapshotId: 'u1', mutations: [{ op: 'create' as const }] }] }],
    };
    await lost(stale.applyBatch(store, batch));
    expect(await ctx.redis.exists(store.key('u1'), store.cursorKey(stream), store.totalsKey(stream))).toBe(0);
    expect((await current.applyBatch(store, batch)).applied).toBe(1);
    expect((await store.read('u1'))?.exists).toBe(true);
    // Without a fence (the live processors) the script behaves as before.
    expect((await store.applyBatch(batch)).skipped).toBe(1);
  });

  it('renewing or releasing with a stale token leaves the current holder its lease', async () => {
    const { keys, stale, current, tokens } = await takenOver();
    expect(await stale.renew(60_000)).toBe(false);
    expect(await stale.release()).toBe(false);
    expect(await ctx.redis.get(keys.lease)).toMatch(new RegExp(`^${tokens[1]} `));
    expect(await current.renew(60_000)).toBe(true);
    expect(await current.release()).toBe(true);
    expect(await ctx.redis.exists(keys.lease)).toBe(0);
  });

  it('renew never releases: a lease time of 0 is refused before anything is sent, release() has its own script', async () => {
    const { keys, current, tokens } = await takenOver();
    await expect(current.renew(0)).rejects.toThrow(RangeError);
    expect(await ctx.redis.get(keys.lease)).toMatch(new RegExp(`^${tokens[1]} `));
    expect(await current.release()).toBe(true);
    expect(await ctx.redis.exists(keys.lease)).toBe(0);
  });

  it('an expired lease nobody took over refuses its old holder too', async () => {
    const { keys, current } = await takenOver();
    await ctx.redis.del(keys.lease);
    const key = unique('k');
    await lost(current.set(key, 'x'));
    expect(await ctx.redis.exists(key)).toBe(0);
    expect(await current.renew(60_000)).toBe(false);
  });
});
