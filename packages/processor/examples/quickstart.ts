// Define a projection once from an event catalog (each handler's event data typed by the catalog's
// schema), run it with one call from a Redis connection, watch a failing handler end in the
// dead-letter stream, rebuild the snapshots with replay() while the processor keeps running, stop,
// and remove every key the projection made.
// Run from the repo root: REDIS_URL=redis://127.0.0.1:6379 npx tsx packages/processor/examples/quickstart.ts
import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { Redis } from 'ioredis';
import { z } from 'zod';
import { EventCatalog, eventStoreKeys } from '@redsource/event-store';
import { createProcessor, DeadLetters, defineProjection, replay, type Logger } from '@redsource/processor';

const redis = new Redis(process.env['REDIS_URL'] ?? 'redis://127.0.0.1:6379');
const run = randomBytes(4).toString('hex'); // unique per run: the Redis may be shared

const order = z.object({ orderId: z.string(), item: z.string().optional() });
// `orders` is the stream's name in code; `stream` its name in Redis (written once, here).
// subjectFields: an order's entries share a partition (found in a flat entry's fields or the event's data).
const catalog = new EventCatalog({
  orders: {
    stream: `quickstart_orders_${run}`,
    schemas: { placed: order, cancelled: order, audited: order },
    subjectFields: ['orderId'],
  },
});
const stream = catalog.streamOf('orders');

const orders = defineProjection({
  name: `orders_${run}`, // names its cursors and rebuild state, and is its processors' consumer group
  catalog,
  keyPrefix: `quickstart_order_${run}_`,
  handlers: {
    orders: {
      // `data` is { orderId: string; item?: string }, from the catalog: no type to assert, a typo does not compile.
      placed: ({ data }) => ({
        snapshotId: data.orderId,
        mutations: [
          { op: 'create' },
          { op: 'setFields', fields: { item: data.item } },
          { op: 'increment', counter: 'placed' },
        ],
      }),
      cancelled: ({ data }) => ({ snapshotId: data.orderId, mutations: [{ op: 'remove' }] }),
      audited: () => {
        throw new Error('audit service is down'); // retried with backoff, then dead-lettered
      },
    },
  },
});

const logger: Logger = {
  debug: () => undefined,
  info: (obj, msg) => console.log('info:', msg, JSON.stringify(obj)),
  warn: (obj, msg) => console.log('warn:', msg, JSON.stringify(obj)),
  error: (obj, msg) => console.log('error:', msg, JSON.stringify(obj)),
};

// One call: the event store, snapshot store and handlers come from the projection.
const processor = createProcessor(orders, {
  connection: redis,
  logger,
  consumer: 'worker-1',
  partitions: 4,
  blockMs: 200,
  maxDeliveries: 3,
  retryBackoffMs: 20,
});
processor.on('partitionsChanged', ({ held }) => console.log('event: partitions held', held));
processor.on('deadLetter', ({ entryId, reason }) => console.log('event: dead letter', entryId, reason.split(':')[0]));
const eventStore = orders.eventStore(redis);
const snapshots = orders.snapshots(redis);
const deadLetters = new DeadLetters(redis);

async function until(condition: () => Promise<boolean> | boolean, timeoutMs = 10_000): Promise<void> {
  for (const deadline = Date.now() + timeoutMs; !(await condition()); await sleep(20)) {
    if (Date.now() > deadline) throw new Error('timed out');
  }
}

try {
  await eventStore.append(stream, [
    { type: 'placed', data: { orderId: 'o1', item: 'book' } },
    { type: 'placed', data: { orderId: 'o2', item: 'lamp' } },
  ]);
  // Resolves once the processor is ready: the group exists (start: 'beginning'), it holds its
  // partitions (it is alone: all 4) and has prepared the stream. Rejects with ProcessorStartError
  // (a refused login, a partition count mismatch, Redis unreachable past startTimeoutMs...).
  await processor.start();

  await eventStore.append(stream, [
    { type: 'cancelled', data: { orderId: 'o2' } },
    { type: 'audited', data: { orderId: 'o1' } },
  ]);
  await redis.xadd(stream, '*', 'orderId', 'o1'); // no type field: undecodable, dead-lettered at once

  const total = await redis.xlen(stream);
  const handled = () => {
    const stats = processor.stats()[stream];
    return (stats?.applied ?? 0) + (stats?.deadLettered ?? 0);
  };
  await until(() => handled() === total);

  console.log('stats', processor.stats()[stream]);
  console.log('o1', await snapshots.read('o1'));
  console.log('o2', await snapshots.read('o2')); // exists: false after 'cancelled'
  for (const dead of await deadLetters.list(stream)) {
    console.log('dead letter:', dead.entryId, dead.reason);
  }

  // Rebuild every snapshot from the first entry while the processor keeps running: the fold goes into
  // shadow hashes, then the live ones are switched over during a short hold. The bad entries are
  // stepped over, not dead-lettered again.
  const result = await replay({
    redis,
    eventStore,
    snapshots,
    handlers: orders.handlers,
    partitioning: { group: processor.settings.group, partitions: processor.settings.partitions }, // the switch moves each partition's cursor
    onProgress: (p) =>
      console.log(
        'replay',
        p.phase,
        `${p.done}/${p.total}`,
        'applied',
        p.applied,
        'stepped',
        p.stepped,
        'switched',
        p.switched,
      ),
  });
  console.log(
    'replayed',
    result.done,
    'of',
    result.total,
    '- o1:',
    (await snapshots.read('o1'))?.fields,
    '- dead letters:',
    await deadLetters.count(stream),
  );

  // The processor goes on from where the rebuilt snapshots are.
  await eventStore.append(stream, { type: 'placed', data: { orderId: 'o3', item: 'pen' } });
  await until(async () => (await snapshots.read('o3')) !== undefined);
  console.log('o3', (await snapshots.read('o3'))?.fields);

  await processor.stop(); // finishes its batches, hands its partitions back, leaves the group, closes its connections
} finally {
  await processor.stop();
  // Every key the projection made: snapshots, cursors, totals, partition keys, its group's keys, the
  // consumer group, rebuild state, and (no other projection reads the stream) the dead letters.
  const removed = await orders.remove(redis);
  console.log('removed', removed.deleted, 'keys');
  // The stream and the event store's keys are not the projection's: this run made them, so it deletes them.
  await redis.del(stream, ...Object.values(eventStoreKeys).map((key) => key(stream)));
  await redis.quit();
}
