import { afterEach, describe, expect, it, vi } from 'vitest';
import { SnapshotStore, type ApplyBatchInput, type BatchEntry } from '@redsource/snapshot-store';
import { unique, useTestRedis } from '../../../test/support/redis.ts';
import { rejection } from '../../../test/support/rejection.ts';

const ctx = useTestRedis();

/**
 * Partition batches of one stream asked for in the same turn of the event loop (as a processor's
 * read hands them out) go to Redis as one call of apply-partitions.lua, each still checked and
 * applied on its own. These fail if the batches go out one call each, or if one batch's failure
 * (its lease lost, its cursor moved) spills onto the others of its call.
 */
describe('partition batches of one turn, in one call', () => {
  const PARTITIONS = 4;
  afterEach(() => {
    vi.restoreAllMocks();
  });

  async function setup() {
    const redis = ctx.redis;
    const stream = unique('shared');
    const deadLetterStream = `redsource:{${stream}}:dead`;
    const store = new SnapshotStore({ redis, keyPrefix: `${unique('snap')}_`, projection: 'profiles' });
    // Entry i belongs to partition i % PARTITIONS and changes user u<i % PARTITIONS>.
    const ids: string[] = [];
    for (let i = 0; i < 12; i++) ids.push(String(await redis.xadd(stream, '*', 'user_id', `u${i % PARTITIONS}`)));
    const epoch = (p: number) => `redsource:{${stream}}:test-epoch:${p}`;
    for (let p = 0; p < PARTITIONS; p++) await redis.set(epoch(p), '7');
    const through = ids[ids.length - 1] as string;
    const entriesOf = (p: number, from = 0): BatchEntry[] =>
      ids
        .map((entryId, i) => ({ entryId, i }))
        .filter(({ i }) => i % PARTITIONS === p && i >= from)
        .map(({ entryId, i }) => ({
          entryId,
          changes: [
            {
              snapshotId: `u${p}`,
              mutations: [
                { op: 'create' },
                { op: 'increment', counter: 'n' },
                { op: 'addMember', set: 'seen', member: String(i) },
              ],
            },
          ],
        }));
    const input = (p: number, options: { token?: string; readFrom?: string; entries?: BatchEntry[] } = {}) =>
      ({
        stream,
        deadLetterStream,
        entries: options.entries ?? entriesOf(p),
        group: 'g',
        partition: { index: p, readFrom: options.readFrom ?? '0-0', readThrough: through },
        fence: { key: epoch(p), token: options.token ?? '7', code: 'RS_PARTITION_LOST' },
      }) satisfies ApplyBatchInput;
    const shared = vi.spyOn(redis, 'redsourceApplyPartitions');
    const single = vi.spyOn(redis, 'redsourceApplyBatch');
    const calls = () => ({ shared: shared.mock.calls.length, single: single.mock.calls.length });
    /** Every partition's batch asked for in one turn (as a read hands them out). */
    const askAll = (make: (p: number) => ApplyBatchInput = (p) => input(p)) =>
      Array.from({ length: PARTITIONS }, (_, p) => store.applyBatch(make(p)));
    return { redis, stream, store, ids, through, epoch, entriesOf, input, calls, askAll, shared };
  }

  it('applies every partition as a call of its own would, in one call', async () => {
    const s = await setup();
    const results = await Promise.all(s.askAll());
    expect(s.calls()).toEqual({ shared: 1, single: 0 });
    for (const result of results)
      expect(result).toEqual({
        applied: 3,
        skipped: 0,
        deadLettered: 0,
        blockedAt: undefined,
        handled: 3,
        cursor: s.through,
        held: false,
      });
    // The same batches applied one call each, on a second store: the same snapshots.
    const alone = new SnapshotStore({ redis: s.redis, keyPrefix: `${unique('alone')}_`, projection: 'alone' });
    for (let p = 0; p < PARTITIONS; p++) await alone.applyBatch(s.input(p));
    expect(s.calls().single).toBe(PARTITIONS);
    for (let p = 0; p < PARTITIONS; p++) {
      const [together, separately] = [await s.store.read(`u${p}`), await alone.read(`u${p}`)];
      expect(together?.counters['n']).toBe(3);
      expect(together?.sets).toEqual(separately?.sets);
      expect(together?.counters).toEqual(separately?.counters);
      expect(together?.revision).toBe(separately?.revision);
      expect(together?.revision).toBe(3);
      expect(await s.store.cursor(s.stream, p)).toBe(s.through);
    }
    expect(await s.store.totals(s.stream)).toEqual({ applied: 12, skipped: 0, deadLettered: 0 });
    // Asked again (a retry after a lost reply): skipped, nothing applied twice.
    const again = await Promise.all(s.askAll());
    expect(again.map((r) => [r.applied, r.skipped])).toEqual(Array.from({ length: PARTITIONS }, () => [0, 3]));
    expect((await s.store.read('u0'))?.counters['n']).toBe(3);
  });

  it('a batch whose lease is lost fails alone: the others of its call are applied', async () => {
    const s = await setup();
    const asked = s.askAll((p) => s.input(p, p === 2 ? { token: '6' } : {}));
    const lost = rejection(asked[2] as Promise<unknown>);
    const others = await Promise.all(asked.filter((_, p) => p !== 2));
    expect(String(await lost)).toContain('RS_PARTITION_LOST');
    expect(s.calls()).toEqual({ shared: 1, single: 0 });
    expect(others.map((r) => r.applied)).toEqual([3, 3, 3]);
    expect(await s.store.read('u2')).toBeUndefined();
    expect(await s.store.cursor(s.stream, 2)).toBe('0-0');
    expect(await s.store.totals(s.stream)).toEqual({ applied: 9, skipped: 0, deadLettered: 0 });
  });

  it('a batch read from past its cursor fails RS_PARTITION_GAP alone', async () => {
    const s = await setup();
    const asked = s.askAll((p) =>
      p === 1 ? s.input(p, { readFrom: s.ids[4] as string, entries: s.entriesOf(p, 5) }) : s.input(p),
    );
    const gap = rejection(asked[1] as Promise<unknown>);
    const others = await Promise.all(asked.filter((_, p) => p !== 1));
    expect(String(await gap)).toContain('RS_PARTITION_GAP');
    expect(others.map((r) => r.applied)).toEqual([3, 3, 3]);
    expect(await s.store.read('u1')).toBeUndefined();
    expect(await s.store.cursor(s.stream, 1)).toBe('0-0');
  });

  it('under a rebuild’s hold every batch answers held and nothing is written', async () => {
    const s = await setup();
    await s.redis.set(s.store.holdKey(s.stream), String(Date.now()));
    const results = await Promise.all(s.askAll());
    expect(s.calls()).toEqual({ shared: 1, single: 0 });
    for (const [p, result] of results.entries())
      expect(result).toEqual({
        applied: 0,
        skipped: 0,
        deadLettered: 0,
        blockedAt: s.entriesOf(p)[0]?.entryId,
        handled: 0,
        cursor: '0-0',
        held: true,
      });
    expect(await s.store.totals(s.stream)).toEqual({ applied: 0, skipped: 0, deadLettered: 0 });
  });

  it('two batches of one partition in one turn go in two calls, in the order asked', async () => {
    const s = await setup();
    const [first, second] = [s.entriesOf(0).slice(0, 2), s.entriesOf(0).slice(2)];
    const middle = first[1]?.entryId as string;
    const results = await Promise.all([
      s.store.applyBatch({
        ...s.input(0, { entries: first }),
        partition: { index: 0, readFrom: '0-0', readThrough: middle },
      }),
      s.store.applyBatch(s.input(0, { entries: second, readFrom: middle })),
      s.store.applyBatch(s.input(1)),
    ]);
    expect(results.map((r) => r.applied)).toEqual([2, 1, 3]);
    // The first call carries partition 0's first batch and partition 1's; the second goes alone.
    expect(s.calls()).toEqual({ shared: 1, single: 1 });
    expect((await s.store.read('u0'))?.counters['n']).toBe(3);
    expect(await s.store.cursor(s.stream, 0)).toBe(s.through);
  });

  it('a large batch asked for after a small one of its partition reaches Redis after it', async () => {
    const s = await setup();
    const [small] = s.entriesOf(0);
    const readThrough = small?.entryId as string;
    // 600 entries of partition 0 after the small batch (ids past the stream's end: partition mode reads none).
    const [ms] = s.through.split('-');
    const large: BatchEntry[] = Array.from({ length: 600 }, (_, i) => ({
      entryId: `${Number(ms) + 1}-${i}`,
      changes: [{ snapshotId: 'u0', mutations: [{ op: 'increment', counter: 'n' }] }],
    }));
    const results = await Promise.all([
      s.store.applyBatch({
        ...s.input(0, { entries: [small as BatchEntry] }),
        partition: { index: 0, readFrom: '0-0', readThrough },
      }),
      s.store.applyBatch({
        ...s.input(0, { entries: large, readFrom: readThrough }),
        partition: { index: 0, readFrom: readThrough, readThrough: large[599]?.entryId as string },
      }),
    ]);
    expect(results.map((r) => r.applied)).toEqual([1, 600]);
    expect((await s.store.read('u0'))?.counters['n']).toBe(601);
  });

  it('an entry Redis refuses to write (a counter past 2^63) is dead-lettered; its batch and the others go on', async () => {
    const s = await setup();
    await s.redis.hset(s.store.key('u2'), 'c:n', '9223372036854775807');
    const results = await Promise.all(s.askAll());
    expect(s.calls()).toEqual({ shared: 1, single: 0 });
    expect(results.map((r) => [r.applied, r.deadLettered])).toEqual([
      [3, 0],
      [3, 0],
      [0, 3],
      [3, 0],
    ]);
    for (const p of [0, 1, 3]) expect((await s.store.read(`u${p}`))?.revision).toBe(3);
    const letters = await s.redis.xrange(`redsource:{${s.stream}}:dead`, '-', '+');
    const reasons = letters.map(([, fields]) => fields[fields.indexOf('reason') + 1]);
    expect(reasons).toHaveLength(3);
    for (const reason of reasons) expect(reason).toContain('RS_APPLY_FAILED');
    // Retried (a lost reply): nothing applied twice, nothing dead-lettered twice.
    const again = await Promise.all(s.askAll());
    expect(again.map((r) => r.skipped)).toEqual([3, 3, 3, 3]);
    expect((await s.store.read('u0'))?.counters['n']).toBe(3);
    expect(await s.redis.xlen(`redsource:{${s.stream}}:dead`)).toBe(3);
  });

  it('a shared call that fails as a whole is sent again one call per batch', async () => {
    const s = await setup();
    s.shared.mockRejectedValueOnce(new Error('connection lost'));
    const results = await Promise.all(
      s.askAll((p) => s.input(p, p === 1 ? { token: '6' } : {})).map((r) => r.catch((e: unknown) => String(e))),
    );
    expect(s.calls()).toEqual({ shared: 1, single: PARTITIONS });
    expect(
      results.map((r) => (typeof r === 'string' ? r.replace(/^ReplyError: /, '').slice(0, 17) : r.applied)),
    ).toEqual([3, 'RS_PARTITION_LOST', 3, 3]);
  });

  it('a bookkeeping key of another type refuses the shared call before any write; each batch alone, only its own fails', async () => {
    const s = await setup();
    await s.redis.del(s.epoch(3));
    await s.redis.hset(s.epoch(3), 'token', '7');
    const asked = s.askAll();
    const refused = rejection(asked[3] as Promise<unknown>);
    const others = await Promise.all(asked.slice(0, 3));
    expect(String(await refused)).toContain('WRONGTYPE');
    expect(s.calls()).toEqual({ shared: 1, single: PARTITIONS });
    // The shared call wrote nothing (every batch was applied by its own call after it).
    expect(others.map((r) => [r.applied, r.skipped])).toEqual([
      [3, 0],
      [3, 0],
      [3, 0],
    ]);
    expect(await s.store.cursor(s.stream, 3)).toBe('0-0');
    expect(await s.store.read('u3')).toBeUndefined();
  });

  it('a batch the caller got wrong (a bad snapshot id) fails alone', async () => {
    const s = await setup();
    const bad: BatchEntry[] = [{ entryId: s.ids[3] as string, changes: [{ snapshotId: 'no spaces', mutations: [] }] }];
    const asked = [s.store.applyBatch(s.input(3, { entries: bad })), s.store.applyBatch(s.input(0))];
    const refused = rejection(asked[0] as Promise<unknown>);
    expect((await asked[1])?.applied).toBe(3);
    expect((await refused) as Error).toMatchObject({ name: 'InvalidSnapshotIdError' });
    expect(await s.store.cursor(s.stream, 3)).toBe('0-0');
  });
});
