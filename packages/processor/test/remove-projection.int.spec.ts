import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { EventCatalog, scanKeys } from '@redsource/event-store';
import { createProcessor, defineProjection, ProjectionInUseError, replay, type Projection } from '@redsource/processor';
import { eventually, unique, useTestRedis } from '../../../test/support/redis.ts';
import { rejection } from '../../../test/support/rejection.ts';

const ctx = useTestRedis();

const order = z.object({ orderId: z.string(), item: z.string().optional() });

/** Two projections of one stream, each with its own name (= group) and key prefix. */
function twoProjections() {
  const stream = unique('orders');
  const catalog = new EventCatalog({
    orders: { stream, schemas: { placed: order, audited: order }, subjectFields: ['orderId'] },
  });
  const define = (name: string) =>
    defineProjection({
      name: unique(name),
      catalog,
      keyPrefix: `${unique(name)}_`,
      handlers: {
        orders: {
          placed: ({ data }) => ({
            snapshotId: data.orderId,
            mutations: [{ op: 'create' }, { op: 'increment', counter: 'placed' }],
          }),
          audited: () => {
            throw new Error('audit service is down');
          },
        },
      },
    });
  return { stream, a: define('proj_a'), b: define('proj_b') };
}

const settings = {
  partitions: 3,
  blockMs: 50,
  rebalanceIntervalMs: 50,
  leaseMs: 1_000,
  retryBackoffMs: 1,
  maxDeliveries: 1,
} as const;

/** Every key on the server that names the stream or one of the projections. */
async function keysOf(stream: string, ...projections: Projection[]): Promise<string[]> {
  const names = [stream, ...projections.flatMap((p) => [p.name, p.keyPrefix])];
  const found: string[] = [];
  for await (const keys of scanKeys(ctx.redis)) found.push(...keys.filter((k) => names.some((n) => k.includes(n))));
  return found.sort();
}

const owns = (projection: Projection) => (key: string) =>
  key.includes(projection.name) || key.includes(projection.keyPrefix);

/** Runs both projections over a few events (one dead-lettered), rebuilds A, stops them. */
async function runBoth(stream: string, a: Projection, b: Projection): Promise<void> {
  const processors = [
    createProcessor(a, { connection: ctx.redis, ...settings }),
    createProcessor(b, { connection: ctx.redis, ...settings }),
  ];
  for (const p of processors) await ctx.track(p).start();
  await a.eventStore(ctx.redis).append(stream, [
    { type: 'placed', data: { orderId: 'o1' } },
    { type: 'placed', data: { orderId: 'o2' } },
    { type: 'placed', data: { orderId: 'o3' } },
    { type: 'audited', data: { orderId: 'o1' } },
  ]);
  const done = async (p: Projection) => (await p.snapshots(ctx.redis).totals(stream)).applied === 3;
  expect(await eventually(async () => (await done(a)) && (await done(b)))).toBe(true);
  await replay({
    redis: ctx.redis,
    eventStore: a.eventStore(ctx.redis),
    snapshots: a.snapshots(ctx.redis),
    handlers: a.handlers,
    partitioning: { group: a.name, partitions: 3 },
  });
  for (const p of processors) await p.stop();
}

describe('removeProjection', () => {
  it('deletes every key the projection owns and leaves the other projection of the stream untouched', async () => {
    const { stream, a, b } = twoProjections();
    await runBoth(stream, a, b);
    // What an interrupted rebuild leaves: a shadow snapshot of A (generation 7).
    await ctx.redis.hset(`redsource:rebuild:{${a.keyPrefix}o9}:g7`, 'placed', '1');
    const before = await keysOf(stream, a, b);
    // What there is to remove: snapshots, cursors per partition, totals, partition streams, epochs, group keys, rebuild fence.
    expect(before.filter(owns(a)).length).toBeGreaterThan(15);
    expect(before).toEqual(
      expect.arrayContaining([
        `redsource:{rebuild:${a.name}:${a.keyPrefix}}:fence`,
        `redsource:{${stream}}:applied:${a.name}:p2`,
        `${a.keyPrefix}o1`,
      ]),
    );
    const bKeys = before.filter(owns(b));
    const bValues = await Promise.all(bKeys.map((k) => ctx.redis.dump(k)));

    const removed = await a.remove(ctx.redis);

    const after = await keysOf(stream, a, b);
    expect(after.filter(owns(a))).toEqual([]);
    expect(removed.deleted).toBe(before.filter(owns(a)).length);
    expect(removed).toMatchObject({ groupsDestroyed: [stream], sharedKept: [stream] });
    const groups = (await ctx.redis.xinfo('GROUPS', stream)) as unknown[][];
    expect(groups.map((g) => g[1])).toEqual([b.name]);
    // B's keys all there, unchanged; and the stream's shared keys (B still needs its dead-lettered ids).
    expect(after.filter(owns(b))).toEqual(bKeys);
    expect(await Promise.all(bKeys.map((k) => ctx.redis.dump(k)))).toEqual(bValues);
    expect(after).toEqual(
      expect.arrayContaining([`redsource:{${stream}}:dead-lettered-ids`, `redsource:{${stream}}:dead`, stream]),
    );

    // The last projection of the stream takes the shared dead-letter keys with it; the stream stays.
    expect(await b.remove(ctx.redis)).toMatchObject({ groupsDestroyed: [stream], sharedKept: [] });
    expect(await keysOf(stream, a, b)).toEqual([stream]);
  });

  it('refuses while a processor of its group is alive, unless forced', async () => {
    const { stream, a } = twoProjections();
    const processor = ctx.track(createProcessor(a, { connection: ctx.redis, ...settings }));
    await processor.start();
    const error = await rejection(a.remove(ctx.redis));
    expect(error).toBeInstanceOf(ProjectionInUseError);
    expect(error).toMatchObject({ code: 'RS_PROJECTION_IN_USE', members: [processor.consumer] });
    expect(String(error)).toMatch(/Stop them first.*force: true/);
    expect(await ctx.redis.exists(`redsource:{group:${a.name}}:members`)).toBe(1); // nothing deleted

    expect((await a.remove(ctx.redis, { force: true })).groupsDestroyed).toEqual([stream]);
    await processor.stop();
    await a.remove(ctx.redis); // what the processor wrote after the forced removal (its membership, heartbeat)
    expect((await keysOf(stream, a)).filter(owns(a))).toEqual([]);
  });
});
