import { afterEach, describe, expect, it } from 'vitest';
import { RedisEventStore } from '@redsource/event-store';
import { SnapshotStore } from '@redsource/snapshot-store';
import { StreamProcessor } from '../src/index.ts';
import { profileCatalog } from '../../../apps/profile-api/src/domain/events.ts';
import { capturingLogger, keys } from '../../../test/support/partitions.ts';
import { isolatedProfileSetup } from '../../../test/support/profile-setup.ts';
import { eventually, useTestRedis } from '../../../test/support/redis.ts';

const ctx = useTestRedis();
const running: StreamProcessor[] = [];
afterEach(async () => {
  await Promise.all(running.splice(0).map((p) => p.stop()));
});

/**
 * redsource 0.2 leased partition p of every stream with one key (`redsource:{group:<g>}:lease:<p>`);
 * this version leases each stream's partitions apart. A processor of each kind in one group would
 * claim the same partitions in turn, each claim fencing the other out: nothing applied twice, but
 * little applied at all. So a processor takes nothing while a 0.2 lease exists, and says why.
 * Without the check in rebalance.lua, the processor below takes its partitions at once and the
 * first expectation fails.
 */
describe('a group where processors of redsource 0.2 still run', () => {
  it('takes no partition while a 0.2 lease is held, says so once, and takes its share once the lease is gone', async () => {
    const setup = isolatedProfileSetup(ctx.redis);
    const olderLease = `redsource:{group:${setup.group}}:lease:3`;
    await ctx.redis.set(olderLease, '7 processor-of-0.2', 'PX', 60_000);
    for (let i = 0; i < 20; i++)
      await ctx.redis.xadd(setup.streams.activity, '*', 'user_id', String(i % 5), 'command', 'like', 'page', 'p1');

    const log = capturingLogger();
    const client = ctx.server.client();
    const processor = new StreamProcessor({
      redis: client,
      eventStore: new RedisEventStore({ redis: client, catalog: profileCatalog(setup.streams) }),
      snapshots: new SnapshotStore({ redis: client, keyPrefix: setup.keyPrefix, projection: 'profiles' }),
      handlers: setup.handlers,
      group: setup.group,
      blockMs: 100,
      rebalanceIntervalMs: 100,
      leaseMs: 2_000,
      logger: log,
    });
    running.push(processor);
    await processor.start();
    await processor.ready();
    // Several rounds: still nothing taken, nothing applied, and one warning (not one per round).
    await new Promise((r) => setTimeout(r, 600));
    expect(processor.partitions).toEqual([]);
    expect(await setup.snapshots.totals(setup.streams.activity)).toEqual({ applied: 0, skipped: 0, deadLettered: 0 });
    const warnings = log.lines.filter((l) => /processors of redsource 0\.2/.test(l.msg));
    expect(warnings).toHaveLength(1);
    expect(warnings[0]?.obj).toMatchObject({ group: setup.group, partitions: 1 });
    // A new-style lease of the same group is not mistaken for an older one.
    expect(keys.lease(setup.group, setup.streams.activity, 3)).not.toBe(olderLease);

    await ctx.redis.del(olderLease);
    expect(await eventually(async () => (processor.partitions.length === 3 * 12 ? true : undefined), 10_000)).toBe(
      true,
    );
    expect(
      await eventually(async () => {
        const totals = await setup.snapshots.totals(setup.streams.activity);
        return totals.applied === 20 ? true : undefined;
      }, 10_000),
    ).toBe(true);
  });
});
