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
