import { Redis } from 'ioredis';
import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { EventCatalog } from '@redsource/event-store';
import {
  createProcessor,
  defineProjection,
  ProcessorLoopError,
  ProcessorStartError,
  type BatchEvent,
  type DeadLetterEvent,
  type PartitionsChangedEvent,
} from '@redsource/processor';
import { eventually, freePort, unique, useTestRedis } from '../../../test/support/redis.ts';
import { rejection } from '../../../test/support/rejection.ts';

const ctx = useTestRedis();

const order = z.object({ orderId: z.string(), item: z.string().optional() });

/** A projection of its own stream, group and keys. */
function ordersProjection() {
  const stream = unique('orders');
  const catalog = new EventCatalog({
    orders: { stream, schemas: { placed: order, audited: order }, subjectFields: ['orderId'] },
  });
  const projection = defineProjection({
    name: unique('orders'),
    catalog,
    keyPrefix: `${unique('order')}_`,
    handlers: {
      orders: {
        placed: ({ data }) => ({
          snapshotId: data.orderId,
          mutations: [{ op: 'create' }, { op: 'setFields', fields: { item: data.item } }],
        }),
        audited: () => {
          throw new Error('audit service is down');
        },
      },
    },
  });
  return { stream, catalog, projection };
}

const fast = { blockMs: 50, rebalanceIntervalMs: 50, leaseMs: 1_000, retryBackoffMs: 1, maxDeliveries: 2 } as const;

describe('createProcessor', () => {
  it('start() resolves once the group exists on each stream and the partitions are taken', async () => {
    const { stream, projection } = ordersProjection();
    const processor = ctx.track(createProcessor(projection, { connection: ctx.redis, partitions: 4, ...fast }));
    await processor.start();
    // No waiting: a plain StreamProcessor.start() returns before any of this exists.
    const groups = (await ctx.redis.xinfo('GROUPS', stream)) as unknown[][];
    expect(groups.map((g) => g[1])).toEqual([projection.name]); // the group defaults to the projection's name
    expect(processor.partitions.map((p) => p.partition)).toEqual([0, 1, 2, 3]);
    expect(processor.isReady).toBe(true);
    expect(await ctx.redis.get(`redsource:{${stream}}:partitions:${projection.name}`)).toBe('4'); // routed once
  });

  it('applies events of the catalog stream through the typed handlers, and emits batch, deadLetter and partitionsChanged', async () => {
    const { stream, projection } = ordersProjection();
    const processor = ctx.track(createProcessor(projection, { connection: ctx.redis, partitions: 2, ...fast }));
    const batches: BatchEvent[] = [];
    const dead: DeadLetterEvent[] = [];
    const changes: PartitionsChangedEvent[] = [];
    processor.on('batch', (b) => batches.push(b));
    processor.on('deadLetter', (d) => dead.push(d));
    processor.on('partitionsChanged', (c) => changes.push(c));
    await processor.start();
    // One stream of 2 partitions: its 2 units, each named by stream and partition.
    const units = [
      { stream, partition: 0 },
      { stream, partition: 1 },
    ];
    expect(changes[0]).toEqual({ held: units, taken: units, draining: [], lost: [], released: [] });

    const store = projection.eventStore(ctx.redis);
    const { entryIds } = await store.append(stream, [
      { type: 'placed', data: { orderId: 'o1', item: 'book' } },
      { type: 'audited', data: { orderId: 'o1' } },
    ]);
    await eventually(async () => dead.length === 1 && batches.reduce((n, b) => n + b.applied, 0) === 1);
    expect((await projection.snapshots(ctx.redis).read('o1'))?.fields).toEqual({ item: 'book' });
    expect(dead).toEqual([
      {
        stream,
        partition: expect.any(Number) as number,
        entryId: entryIds[1],
        reason: expect.stringMatching(/^RS_HANDLER_FAILED: .*audit service is down/) as string,
      },
    ]);
    // One subject, one partition: both entries in one batch (or two, if the second arrived later).
    const [first] = batches;
    expect(first).toMatchObject({ stream, firstEntryId: entryIds[0], applied: 1, skipped: 0 });
    expect(batches.reduce((n, b) => n + b.count, 0)).toBe(2);
    expect(batches.reduce((n, b) => n + b.deadLettered, 0)).toBe(1);
    expect(first?.durationMs).toBeGreaterThanOrEqual(0);

    // A second processor joins: this one gives a partition back, and says so.
    const second = ctx.track(createProcessor(projection, { connection: ctx.redis, partitions: 2, ...fast }));
    await second.start();
    await eventually(async () => changes.some((c) => c.released.length === 1));
    // The last unit (by stream, then partition) goes: partition 1 of the stream.
    const draining = changes.find((c) => c.draining.length > 0);
    expect(draining?.draining).toEqual([{ stream, partition: 1 }]);
    expect(changes.find((c) => c.released.length > 0)).toMatchObject({
      held: [{ stream, partition: 0 }],
      released: [{ stream, partition: 1 }],
    });
    await eventually(async () => second.partitions.length === 1);
    expect(second.partitions).toEqual([expect.objectContaining({ stream, partition: 1 })]);
  });

  it('rejects start() with RS_PARTITIONS_MISMATCH when the stream is routed to another partition count', async () => {
    const { projection } = ordersProjection();
    const first = createProcessor(projection, { connection: ctx.redis, partitions: 4, ...fast });
    await first.start();
    await first.stop();
    const second = ctx.track(createProcessor(projection, { connection: ctx.redis, partitions: 8, ...fast }));
    const error = await rejection(second.start());
    expect(error).toBeInstanceOf(ProcessorStartError);
    expect(error).toMatchObject({ code: 'RS_PROCESSOR_START', reason: 'RS_PARTITIONS_MISMATCH' });
    expect(String(error)).toMatch(/give every processor of the group that count/);
    expect(second.running).toBe(false); // stopped: nothing left looping
  });

  it('rejects start() with WRONGTYPE when a stream key holds another type, and emits the loop error', async () => {
    const { stream, projection } = ordersProjection();
    await ctx.redis.set(stream, 'not a stream');
    try {
      const processor = ctx.track(createProcessor(projection, { connection: ctx.redis, ...fast }));
      const errors: ProcessorLoopError[] = [];
      processor.on('error', (e) => errors.push(e));
      const error = await rejection(processor.start());
      expect(error).toMatchObject({ reason: 'WRONGTYPE' });
      expect(errors[0]).toBeInstanceOf(ProcessorLoopError);
      expect(errors[0]).toMatchObject({ loop: 'ownership', redisCode: 'WRONGTYPE' });
    } finally {
      await ctx.redis.del(stream);
    }
  });

  it('rejects start() with WRONGPASS when Redis refuses the login', async () => {
    const { projection } = ordersProjection();
    const connection = new Redis(ctx.server.url, {
      username: unique('nobody'),
      password: 'wrong',
      maxRetriesPerRequest: 1,
      retryStrategy: () => 50,
    });
    connection.on('error', () => undefined);
    try {
      const processor = ctx.track(createProcessor(projection, { connection, ...fast }));
      const error = await rejection(processor.start());
      expect(error).toBeInstanceOf(ProcessorStartError);
      expect(error).toMatchObject({ reason: 'WRONGPASS' });
      expect(String(error)).toMatch(/check the user name and password/);
    } finally {
      connection.disconnect();
    }
  });

  it('rejects start() after startTimeoutMs when Redis cannot be reached; start({ waitUntilReady: false }) returns at once', async () => {
    const { projection } = ordersProjection();
    const connection = new Redis({
      port: await freePort(),
      host: '127.0.0.1',
      maxRetriesPerRequest: 1,
      retryStrategy: () => 50,
      lazyConnect: true,
    });
    connection.on('error', () => undefined);
    try {
      const processor = ctx.track(
        createProcessor(projection, { connection, ...fast, startTimeoutMs: 500, shutdownTimeoutMs: 200 }),
      );
      const started = Date.now();
      const error = await rejection(processor.start());
      expect(error).toMatchObject({ reason: 'TIMEOUT' });
      expect(String(error)).toMatch(/not ready within 500 ms.*raise `startTimeoutMs`/);
      expect(Date.now() - started).toBeLessThan(5_000);

      const patient = ctx.track(createProcessor(projection, { connection, ...fast, shutdownTimeoutMs: 200 }));
      await patient.start({ waitUntilReady: false });
      expect(patient.running).toBe(true);
      expect(patient.isReady).toBe(false);
    } finally {
      connection.disconnect();
    }
  });

  it('validates its settings with the processor schema', () => {
    const { projection } = ordersProjection();
    expect(() => createProcessor(projection, { connection: ctx.redis, startTimeoutMs: 0 })).toThrow(/startTimeoutMs/);
  });
});
