// Fold a stream into snapshots with a partitioned processor (each order's entries routed to one
// partition, applied in order), watch a failing handler end in the dead-letter stream, rebuild the
// snapshots with replay() while the processor keeps running, stop.
// Run from the repo root: REDIS_URL=redis://127.0.0.1:6379 npx tsx packages/processor/examples/quickstart.ts
import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { Redis } from 'ioredis';
import { z } from 'zod';
import { EventCatalog, RedisEventStore, eventStoreKeys } from '@redsource/event-store';
import { SnapshotStore, snapshotKeys } from '@redsource/snapshot-store';
import { DeadLetters, HandlerRegistry, StreamProcessor, partitionKeys, processorKeys, replay, type Logger } from '@redsource/processor';

const redis = new Redis(process.env['REDIS_URL'] ?? 'redis://127.0.0.1:6379');
const run = randomBytes(4).toString('hex'); // unique per run: the Redis may be shared
const stream = `quickstart_orders_${run}`;
const group = `quickstart_${run}`;

const order = z.object({ orderId: z.string(), item: z.string().optional() });
// subjectFields: an order's entries share a partition (found in a flat entry's fields or the event's data).
const catalog = new EventCatalog({ [stream]: { schemas: { placed: order, cancelled: order, audited: order }, subjectFields: ['orderId'] } });
const eventStore = new RedisEventStore({ redis, catalog });
// The projection names the cursors and the rebuild state: unique per run too.
const snapshots = new SnapshotStore({ redis, keyPrefix: `quickstart_order_${run}_`, projection: `orders_${run}` });

type Order = z.output<typeof order>;
const handlers = new HandlerRegistry()
  .on<Order>(stream, 'placed', ({ data }) => ({
    snapshotId: data.orderId,
    mutations: [{ op: 'create' }, { op: 'setFields', fields: { item: data.item } }, { op: 'increment', counter: 'placed' }],
  }))
  .on<Order>(stream, 'cancelled', ({ data }) => ({ snapshotId: data.orderId, mutations: [{ op: 'remove' }] }))
  .on<Order>(stream, 'audited', () => {
    throw new Error('audit service is down'); // retried with backoff, then dead-lettered
  });

const logger: Logger = {
  debug: () => undefined,
  info: (obj, msg) => console.log('info:', msg, JSON.stringify(obj)),
  warn: (obj, msg) => console.log('warn:', msg, JSON.stringify(obj)),
  error: (obj, msg) => console.log('error:', msg, JSON.stringify(obj)),
};

const processor = new StreamProcessor({
  redis, eventStore, snapshots, handlers, logger,
  group, consumer: 'worker-1', partitions: 4, blockMs: 200, maxDeliveries: 3, retryBackoffMs: 20,
});
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
  // start() returns at once; the processor creates the group (start: 'beginning') as soon as Redis
  // answers, takes the partitions (it is alone: all 4) and routes the two entries above too.
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
    redis, eventStore, snapshots, handlers,
    partitioning: { group, partitions: processor.settings.partitions }, // the switch moves each partition's cursor
    onProgress: (p) => console.log('replay', p.phase, `${p.done}/${p.total}`, 'applied', p.applied, 'stepped', p.stepped, 'switched', p.switched),
  });
  console.log('replayed', result.done, 'of', result.total, '- o1:', (await snapshots.read('o1'))?.fields, '- dead letters:', await deadLetters.count(stream));

  // The processor goes on from where the rebuilt snapshots are.
  await eventStore.append(stream, { type: 'placed', data: { orderId: 'o3', item: 'pen' } });
  await until(async () => (await snapshots.read('o3')) !== undefined);
  console.log('o3', (await snapshots.read('o3'))?.fields);

  await processor.stop(); // finishes its batches, hands its partitions back, leaves the group, closes its connections
} finally {
  await processor.stop();
  // Delete what this run created. DEL of the stream also drops its consumer group.
  const partitions = [...Array(processor.settings.partitions).keys()];
  await redis.del(
    ...partitions.flatMap((p) => [
      partitionKeys.stream(stream, group, p), // the entries routed to the partition (what is not applied yet)
      partitionKeys.epoch(stream, group, p), // the fencing token of its last holder
      partitionKeys.lease(group, p), // released by stop(); left only by a processor that died
      partitionKeys.fence(group, p), // the last fencing token given
      snapshots.cursorKey(stream, p), // where the partition is applied up to
    ]),
    partitionKeys.count(stream, group),
    partitionKeys.members(group), // stop() leaves it; left only by a processor that died
    processorKeys.attempts(stream, group), // failed handler attempts, while an entry has some
    stream,
    eventStoreKeys.versions(stream),
    eventStoreKeys.eventIds(stream),
    eventStoreKeys.eventIdsByAge(stream),
    snapshots.cursorKey(stream),
    snapshots.totalsKey(stream),
    snapshots.holdKey(stream), // left only by a replay that failed while holding
    snapshotKeys.deadLettered(stream),
    processorKeys.deadLetters(stream),
    processorKeys.heartbeats(group),
    processorKeys.consumerStats(group),
    processorKeys.rebuild(snapshots.projection, snapshots.keyPrefix), // left only by a replay that failed half-way
    processorKeys.rebuildFence(snapshots.projection, snapshots.keyPrefix), // the last fencing token given to a replay
    snapshots.key('o1'),
    snapshots.key('o2'),
    snapshots.key('o3'),
  );
  await redis.quit();
}
