import type { Redis } from 'ioredis';
import { describe, expect, it } from 'vitest';
import { streamStatus } from '@redsource/processor';
import { PartitionedStreams } from '../src/partitions/streams.ts';
import { partitionOfSubject } from '../src/partitions/subject.ts';
import { useTestCluster } from '../../../test/support/cluster.ts';
import { isolatedProfileSetup } from '../../../test/support/profile-setup.ts';

/**
 * Why processing waits, on a 3-master Redis Cluster: INFO through a cluster client is answered by a
 * random node, so a refusing master showed only now and then. Every master is asked instead.
 */
describe('streamStatus on a Redis Cluster: Redis refusing writes', () => {
  const ctx = useTestCluster();

  it('an out-of-memory master is reported every time, naming the node: first for the streams it holds, and for the others', async () => {
    const { cluster } = ctx;
    const redis = cluster.client() as unknown as Redis;
    const setup = isolatedProfileSetup(redis);
    const streams = [setup.streams.updates, setup.streams.activity, setup.streams.friends];
    const read = () =>
      streamStatus({
        redis,
        snapshots: setup.snapshots,
        group: setup.group,
        streams,
        subjectFields: (stream) => setup.eventStore.catalog.subjectFields(stream),
      });
    for (const row of await read()) expect(row.waiting, row.stream).toBeUndefined();

    const owners = await Promise.all(streams.map((s) => cluster.nodeForKey(s)));
    const full = owners[0] as number;
    await cluster.command(full, 'CONFIG', 'SET', 'maxmemory', '1');
    try {
      // Eight reads: with INFO on a random node, one of three, some would miss it.
      for (let i = 0; i < 8; i++) {
        for (const [n, row] of (await read()).entries()) {
          expect(row.waiting, `${row.stream}, read ${i}`).toMatchObject({ kind: 'OOM', source: 'redis' });
          expect(row.waiting?.reason).toMatch(
            /^OOM: Redis is out of memory .*; used_memory .* > maxmemory .*\(noeviction\)/,
          );
          // The stream's own master when it refuses, else the one that does.
          expect(row.waiting?.reason, `stream on ${owners[n]}`).toContain(`(Redis Cluster node 127.0.0.1:${full})`);
        }
      }
      // A second refusing master: each stream on a refusing master names its own.
      const other = owners.find((port) => port !== full);
      if (other !== undefined) {
        await cluster.command(other, 'CONFIG', 'SET', 'maxmemory', '1');
        try {
          for (const [n, row] of (await read()).entries()) {
            const own = owners[n] === full || owners[n] === other ? owners[n] : undefined;
            if (own !== undefined)
              expect(row.waiting?.reason, row.stream).toContain(`(Redis Cluster node 127.0.0.1:${own})`);
            else expect(row.waiting?.kind, row.stream).toBe('OOM');
          }
        } finally {
          await cluster.command(other, 'CONFIG', 'SET', 'maxmemory', '0');
        }
      }
    } finally {
      await cluster.command(full, 'CONFIG', 'SET', 'maxmemory', '0');
    }
    for (const row of await read()) expect(row.waiting, row.stream).toBeUndefined();
  });

  it("counts each partition's entries after its cursor in the source stream, through a cluster client", async () => {
    const redis = ctx.cluster.client() as unknown as Redis;
    const setup = isolatedProfileSetup(redis);
    const stream = setup.streams.updates;
    const partitions = 4;
    const users = ['u1', 'u2', 'u3', 'u4', 'u5'];
    for (const user of users) await redis.xadd(stream, '*', 'user_id', user, 'command', 'register', 'name', user);
    await new PartitionedStreams(redis, setup.group, partitions).prepare(
      stream,
      '0',
      setup.snapshots.cursorKey(stream),
      (p) => setup.snapshots.cursorKey(stream, p),
    );
    const [row] = await streamStatus({
      redis,
      snapshots: setup.snapshots,
      group: setup.group,
      streams: [stream],
      partitions,
      subjectFields: (s) => setup.eventStore.catalog.subjectFields(s),
    });
    expect(row).toMatchObject({ lag: 5, unapplied: 5, backlog: 5, unappliedExact: true, partitionCount: partitions });
    expect(row?.partitions.map((p) => p.unapplied)).toEqual(
      [0, 1, 2, 3].map((p) => users.filter((u) => partitionOfSubject(u, partitions) === p).length),
    );
  });
});
