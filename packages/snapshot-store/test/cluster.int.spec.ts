import type { Redis } from 'ioredis';
import { describe, expect, it } from 'vitest';
import { keySlot, SnapshotStore, type BatchEntry } from '@redsource/snapshot-store';
import { useTestCluster } from '../../../test/support/cluster.ts';
import { unique } from '../../../test/support/redis.ts';
import { partitionApplyContract } from './partition-apply.contract.ts';

/** The snapshot store on a 3-master Redis Cluster (one cluster for the file). */
const ctx = useTestCluster();

/** readMany(): snapshots on every node, read back in one call. */
describe('SnapshotStore.readMany on a Redis Cluster', () => {
  it('reads snapshots spread over every node, in the order asked, undefined where none exists', async () => {
    const redis = ctx.cluster.client() as unknown as Redis;
    const stream = unique('stream');
    const store = new SnapshotStore({ redis, keyPrefix: `${unique('snap')}_` });
    const ids = Array.from({ length: 40 }, (_, i) => String(i));
    const entries: BatchEntry[] = [];
    for (const id of ids) {
      const entryId = String(await redis.xadd(stream, '*', 'id', id));
      entries.push({
        entryId,
        changes: [
          {
            snapshotId: id,
            mutations: [
              { op: 'create' },
              { op: 'setFields', fields: { name: `n${id}` } },
              { op: 'increment', counter: 'c', by: Number(id) },
            ],
          },
        ],
      });
    }
    const result = await store.applyBatch({ stream, deadLetterStream: `redsource:{${stream}}:dead`, entries });
    expect(result.applied).toBe(ids.length);
    const nodes = new Set(await Promise.all(ids.map((id) => ctx.cluster.nodeForSlot(keySlot(store.key(id))))));
    expect(nodes.size).toBe(3);

    const asked = [...ids].reverse().concat('nobody');
    const many = await store.readMany(asked);
    expect(many).toHaveLength(asked.length);
    expect(many.at(-1)).toBeUndefined();
    for (const [i, id] of asked.slice(0, -1).entries()) {
      expect(many[i], id).toEqual(await store.read(id));
      expect(many[i]).toMatchObject({
        id,
        exists: true,
        fields: { name: `n${id}` },
        counters: id === '0' ? {} : { c: Number(id) },
      });
    }
    expect(await store.readMany([])).toEqual([]);
    // apply-snapshots.lua gives each hash it creates an incarnation too: version() names cluster snapshots as well.
    for (const id of ids)
      expect(await store.version(id)).toEqual({ incarnation: expect.stringMatching(/^\d+\.\d+$/), revision: '1' });
  });
});

/**
 * A partition's batch across slots (check-batch.lua, apply-snapshots.lua per slot, then
 * apply-batch.lua's bookkeeping) behaves as the one script does on one Redis.
 */
describe("entries of one partition of a stream on a Redis Cluster (a partitioned processor's)", () => {
  let redis: Redis | undefined;
  partitionApplyContract(() => (redis ??= ctx.cluster.client() as unknown as Redis));
});

/** A write Redis refuses in apply-snapshots.lua, when the bookkeeping step after it fails (apply-batch.lua in the stream's slot). */
describe('an entry whose snapshot write Redis refuses, on a Redis Cluster', () => {
  it('is dead-lettered by the retry after a failed bookkeeping step, not counted applied, and nothing is written twice', async () => {
    const redis = ctx.cluster.client() as unknown as Redis;
    const stream = unique('rstream');
    const deadLetterStream = `redsource:{${stream}}:dead`;
    const store = new SnapshotStore({ redis, keyPrefix: `${unique('snap')}_`, projection: 'profiles' });
    const [e1, e2, e3, e4] = [
      String(await redis.xadd(stream, '*', 'n', '1')),
      String(await redis.xadd(stream, '*', 'n', '2')),
      String(await redis.xadd(stream, '*', 'n', '3')),
      String(await redis.xadd(stream, '*', 'n', '4')),
    ];
    await redis.hset(store.key('full'), 'c:n', '9223372036854775807');
    const increment = (entryId: string, snapshotId: string): BatchEntry => ({
      entryId,
      changes: [{ snapshotId, mutations: [{ op: 'increment', counter: 'n' }] }],
    });
    const apply = (entries: BatchEntry[], readFrom: string, readThrough: string) =>
      store.applyBatch({
        stream,
        deadLetterStream,
        entries,
        group: 'g',
        partition: { index: 0, readFrom, readThrough },
      });
    const batch = [increment(e1, 'ok'), increment(e2, 'full'), increment(e3, 'ok')];
    // The snapshot writes happen, then the bookkeeping refuses: the dead-letter stream holds a string.
    await redis.set(deadLetterStream, 'not a stream');
    await expect(apply(batch, '0-0', e3)).rejects.toThrow(/is a string, expected a stream/);
    expect((await store.read('ok'))?.counters['n']).toBe(2);
    expect(await store.cursor(stream, 0)).toBe('0-0');
    await redis.del(deadLetterStream);
    expect(await apply(batch, '0-0', e3)).toMatchObject({ applied: 2, skipped: 0, deadLettered: 1, cursor: e3 });
    expect((await store.read('ok'))?.counters['n']).toBe(2);
    const letters = await redis.xrange(deadLetterStream, '-', '+');
    expect(letters.map(([, fields]) => fields[fields.indexOf('entry_id') + 1])).toEqual([e2]);
    expect(letters[0]?.[1][letters[0][1].indexOf('reason') + 1]).toMatch(/^RS_APPLY_FAILED: .*overflow/);
    expect(await store.totals(stream)).toEqual({ applied: 2, skipped: 0, deadLettered: 1 });
    // Booked now: the next write to that snapshot past the cursor forgets the refusal.
    const refusedField = `_refused:${stream}:p0`;
    expect(await redis.hexists(store.key('full'), refusedField)).toBe(1);
    await redis.hset(store.key('full'), 'c:n', '1');
    expect(await apply([increment(e4, 'full')], e3, e4)).toMatchObject({ applied: 1, deadLettered: 0 });
    expect(await redis.hexists(store.key('full'), refusedField)).toBe(0);
    expect((await store.read('full'))?.counters['n']).toBe(2);
  });
});
