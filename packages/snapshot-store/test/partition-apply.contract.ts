import type { Redis } from 'ioredis';
import { expect, it } from 'vitest';
import { SnapshotStore, type BatchEntry, type Mutation } from '@redsource/snapshot-store';
import { unique } from '../../../test/support/redis.ts';
import { rejection } from '../../../test/support/rejection.ts';

/**
 * applyBatch in partition mode, as a partitioned processor calls it: the batch is one partition's
 * entries of the source stream after `readFrom` up to `readThrough` (the entries of other
 * partitions left out). Run against one Redis (one script) and a Redis Cluster (check-batch, the
 * snapshot writes per slot, then the bookkeeping), which must behave the same.
 *
 * How these were checked to fail (each change alone, reverted afterwards): apply-batch.lua not
 * moving the cursor to ARGV[8] fails "moves the cursor to readThrough"; the TS shortcut for an
 * empty batch taken in partition mode too fails it as well; the GAP check removed from both
 * scripts fails "RS_PARTITION_GAP"; the predecessor check kept in partition mode fails "no
 * predecessor check" (blockedAt at the first entry).
 */
export function partitionApplyContract(client: () => Redis): void {
  const PARTITION = 3;

  /** Six entries of a stream; partition 3's are the 1st, 3rd and 5th (the others belong to other partitions). */
  async function partitioned() {
    const redis = client();
    const stream = unique('pstream');
    const group = unique('g');
    const deadLetterStream = `redsource:{${stream}}:dead`;
    const store = new SnapshotStore({ redis, keyPrefix: `${unique('snap')}_`, projection: 'profiles' });
    const ids: string[] = [];
    for (let i = 0; i < 6; i++)
      ids.push(String(await redis.xadd(stream, '*', 'user_id', i % 2 === 0 ? 'mine' : 'other', 'n', String(i))));
    const epoch = `redsource:{${stream}}:epoch:${group}:${PARTITION}`;
    const apply = (entries: readonly BatchEntry[], readFrom: string, readThrough: string, token?: string) =>
      store.applyBatch({
        stream,
        deadLetterStream,
        entries,
        group,
        partition: { index: PARTITION, readFrom, readThrough },
        ...(token === undefined ? {} : { fence: { key: epoch, token, code: 'RS_PARTITION_LOST' } }),
      });
    const [e1, e2, e3, e4, e5, e6] = ids as [string, string, string, string, string, string];
    return { redis, stream, group, deadLetterStream, store, epoch, apply, e1, e2, e3, e4, e5, e6 };
  }

  const bump = (entryId: string, snapshotId = 'mine', ...more: Mutation[]): BatchEntry => ({
    entryId,
    changes: [{ snapshotId, mutations: [{ op: 'create' }, { op: 'increment', counter: 'n' }, ...more] }],
  });

  /** Nothing of the batch is written: snapshots, partition cursor, totals, dead letters. */
  async function expectUntouched(
    p: Awaited<ReturnType<typeof partitioned>>,
    cursor: string,
    counter: number | undefined,
  ): Promise<void> {
    expect((await p.store.read('mine'))?.counters['n']).toBe(counter);
    expect(await p.store.read('x')).toBeUndefined();
    expect(await p.store.cursor(p.stream, PARTITION)).toBe(cursor);
    expect(await p.redis.xlen(p.deadLetterStream)).toBe(0);
    expect(await p.redis.scard(`redsource:{${p.stream}}:dead-lettered-ids`)).toBe(0);
  }

  it('moves the partition cursor to readThrough, with no entries at all, and never back', async () => {
    const p = await partitioned();
    // Nothing of this partition up to e2: the cursor moves there all the same.
    expect(await p.apply([], '0-0', p.e2)).toEqual({
      applied: 0,
      skipped: 0,
      deadLettered: 0,
      blockedAt: undefined,
      handled: 0,
      cursor: p.e2,
      held: false,
    });
    expect(await p.store.cursor(p.stream, PARTITION)).toBe(p.e2);
    // An entry after it, through the end of the read.
    expect(await p.apply([bump(p.e3)], p.e2, p.e4)).toMatchObject({ applied: 1, cursor: p.e4 });
    // A read through less than the cursor (a retry of an older read) leaves it where it is.
    expect(await p.apply([], p.e2, p.e3)).toMatchObject({ applied: 0, cursor: p.e4 });
    expect(await p.store.cursor(p.stream, PARTITION)).toBe(p.e4);
    // Only this partition's cursor: the stream's own and the other partitions' are untouched.
    expect(await p.store.cursor(p.stream)).toBe('0-0');
    expect(await p.store.cursor(p.stream, PARTITION + 1)).toBe('0-0');
    expect(await p.store.totals(p.stream)).toEqual({ applied: 1, skipped: 0, deadLettered: 0 });
  });

  it('no predecessor check: entries of other partitions between two of its entries do not block it', async () => {
    const p = await partitioned();
    const result = await p.apply([bump(p.e1), bump(p.e3), bump(p.e5)], '0-0', p.e6);
    expect(result).toEqual({
      applied: 3,
      skipped: 0,
      deadLettered: 0,
      blockedAt: undefined,
      handled: 3,
      cursor: p.e6,
      held: false,
    });
    expect((await p.store.read('mine'))?.counters['n']).toBe(3);
  });

  it('skips the entries at or below the cursor: a retried batch (its reply lost) applies nothing twice', async () => {
    const p = await partitioned();
    const batch = [bump(p.e1), bump(p.e3)];
    expect(await p.apply(batch, '0-0', p.e4)).toMatchObject({ applied: 2, skipped: 0, cursor: p.e4 });
    expect(await p.apply(batch, '0-0', p.e4)).toMatchObject({ applied: 0, skipped: 2, cursor: p.e4 });
    // Read again from an older position: the applied prefix is skipped, the rest applied once.
    expect(await p.apply([bump(p.e3), bump(p.e5)], p.e2, p.e6)).toMatchObject({ applied: 1, skipped: 1, cursor: p.e6 });
    expect((await p.store.read('mine'))?.counters['n']).toBe(3);
    expect(await p.store.totals(p.stream)).toEqual({ applied: 3, skipped: 3, deadLettered: 0 });
  });

  it('refuses a batch read from past the stored cursor (RS_PARTITION_GAP) and writes nothing, empty or not', async () => {
    const p = await partitioned();
    await p.apply([bump(p.e1)], '0-0', p.e2);
    // The holder believes the partition is applied through e4, Redis says e2: e3 would be skipped.
    const letter: BatchEntry = { entryId: p.e6, deadLetter: { reason: 'RS_TEST poison', fields: ['n', '4'] } };
    for (const entries of [[bump(p.e5, 'x'), letter], []]) {
      const refused = await rejection(p.apply(entries, p.e4, p.e6));
      expect(String(refused)).toMatch(/RS_PARTITION_GAP/);
      await expectUntouched(p, p.e2, 1);
    }
    expect(await p.store.totals(p.stream)).toEqual({ applied: 1, skipped: 0, deadLettered: 0 });
    // Read again from the stored cursor, it applies.
    expect(await p.apply([bump(p.e3), bump(p.e5)], p.e2, p.e6)).toMatchObject({ applied: 2, cursor: p.e6 });
    expect((await p.store.read('mine'))?.counters['n']).toBe(3);
  });

  it('with a stale fencing token fails RS_PARTITION_LOST and writes nothing, not even the cursor of an empty batch', async () => {
    const p = await partitioned();
    await p.redis.set(p.epoch, '5');
    expect(await p.apply([bump(p.e1)], '0-0', p.e2, '5')).toMatchObject({ applied: 1, cursor: p.e2 });
    // A later holder claimed the partition.
    await p.redis.set(p.epoch, '6');
    const letter: BatchEntry = { entryId: p.e5, deadLetter: { reason: 'RS_TEST poison', fields: ['n', '4'] } };
    for (const entries of [[bump(p.e3, 'x'), letter], []]) {
      expect(String(await rejection(p.apply(entries, p.e2, p.e6, '5')))).toMatch(/RS_PARTITION_LOST/);
      await expectUntouched(p, p.e2, 1);
    }
    expect(await p.store.totals(p.stream)).toEqual({ applied: 1, skipped: 0, deadLettered: 0 });
    expect(await p.apply([bump(p.e3)], p.e2, p.e6, '6')).toMatchObject({ applied: 1, cursor: p.e6 });
  });

  it('dead-letters an entry Redis refuses to write (a counter past 2^63) and goes on; a retry writes nothing twice', async () => {
    const p = await partitioned();
    await p.redis.hset(p.store.key('full'), 'c:n', '9223372036854775807');
    const batch: BatchEntry[] = [
      bump(p.e1),
      bump(p.e3, 'full'),
      {
        entryId: p.e5,
        changes: [
          { snapshotId: 'mine', mutations: [{ op: 'increment', counter: 'n' }] },
          { snapshotId: 'full', mutations: [{ op: 'increment', counter: 'n' }] },
        ],
      },
    ];
    expect(await p.apply(batch, '0-0', p.e6)).toMatchObject({ applied: 1, deadLettered: 2, handled: 3, cursor: p.e6 });
    expect(await p.apply(batch, '0-0', p.e6)).toMatchObject({ applied: 0, skipped: 3, cursor: p.e6 });
    // e5's change of 'mine' comes before its failing one, so it is written (on one Redis and on a cluster alike): it stays.
    expect((await p.store.read('mine'))?.counters['n']).toBe(2);
    expect((await p.store.read('mine'))?.revision).toBe(2);
    expect(await p.redis.hget(p.store.key('full'), 'c:n')).toBe('9223372036854775807');
    const letters = await p.redis.xrange(p.deadLetterStream, '-', '+');
    expect(letters.map(([, fields]) => fields[fields.indexOf('entry_id') + 1])).toEqual([p.e3, p.e5]);
    for (const [, fields] of letters)
      expect(fields[fields.indexOf('reason') + 1]).toMatch(/^RS_APPLY_FAILED: .*overflow/);
    expect(await p.store.totals(p.stream)).toEqual({ applied: 1, skipped: 3, deadLettered: 2 });
  });

  it("dead letters name the source stream and the group and carry the source entry's bytes; totals count per source stream", async () => {
    const p = await partitioned();
    const result = await p.apply(
      [bump(p.e1), { entryId: p.e3, deadLetter: { reason: 'bad', fields: ['user_id', 'mine'] } }, bump(p.e5)],
      '0-0',
      p.e6,
    );
    expect(result).toEqual({
      applied: 2,
      skipped: 0,
      deadLettered: 1,
      blockedAt: undefined,
      handled: 3,
      cursor: p.e6,
      held: false,
    });
    expect(await p.store.totals(p.stream)).toEqual({ applied: 2, skipped: 0, deadLettered: 1 });
    const [[, letter] = ['', []]] = await p.redis.xrange(p.deadLetterStream, '-', '+');
    const record = Object.fromEntries(letter.flatMap((v, i) => (i % 2 === 0 ? [[v, letter[i + 1]]] : [])));
    expect(record).toMatchObject({
      stream: p.stream,
      entry_id: p.e3,
      reason: 'bad',
      group: p.group,
      original: '7:user_id,4:mine,1:n,1:2,',
    });
    // The stream's own cursor (of before partitions) is not written.
    expect(await p.redis.exists(`redsource:{${p.stream}}:applied:profiles`)).toBe(0);
  });
}
