// The guide's orders example (docs/guide.md): events with zod schemas in an EventCatalog, a
// projection of them, events appended, a processor applying them, a Fastify GET /orders/:id route
// reading the snapshots, replay() rebuilding them, and every key removed at the end.
// Run: REDIS_URL=redis://127.0.0.1:6379 node orders.js (after tsc), or npx tsx orders.ts
import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import Fastify from 'fastify';
import { Redis } from 'ioredis';
import { z } from 'zod';
import { EventCatalog, eventStoreKeys } from '@redsource/event-store';
import { createProcessor, defineProjection, replay } from '@redsource/processor';

const redis = new Redis(process.env['REDIS_URL'] ?? 'redis://127.0.0.1:6379');
const run = randomBytes(4).toString('hex'); // names of this run's own: the Redis may be shared

// 1. The events: one stream, its event types and their data as zod schemas.
const placed = z.object({ orderId: z.string(), item: z.string(), quantity: z.number().int().positive() });
const shipped = z.object({ orderId: z.string(), carrier: z.string() });
const catalog = new EventCatalog({
  orders: { stream: `orders_${run}`, schemas: { placed, shipped }, subjectFields: ['orderId'] },
});
const stream = catalog.streamOf('orders');

// 2. The projection: each order's snapshot, folded from its events.
const orderSummaries = defineProjection({
  name: `order_summaries_${run}`,
  catalog,
  keyPrefix: `order_summary_${run}:`,
  handlers: {
    orders: {
      placed: ({ data }) => ({
        snapshotId: data.orderId,
        mutations: [
          { op: 'create' },
          { op: 'setFields', fields: { item: data.item, quantity: data.quantity, status: 'placed' } },
        ],
      }),
      shipped: ({ data }) => ({
        snapshotId: data.orderId,
        mutations: [{ op: 'setFields', fields: { status: 'shipped', carrier: data.carrier } }],
      }),
    },
  },
});

// 3. A processor applies the events to the snapshots.
const processor = createProcessor(orderSummaries, { connection: redis, blockMs: 100 });
const eventStore = orderSummaries.eventStore(redis);
const snapshots = orderSummaries.snapshots(redis);

// 4. The read side: GET /orders/:id answers from the snapshot.
const app = Fastify();
app.get<{ Params: { id: string } }>('/orders/:id', async (request, reply) => {
  const order = await snapshots.read(request.params.id);
  if (!order?.exists) return reply.code(404).send({ error: 'no such order' });
  return { id: order.id, revision: order.revision, ...order.fields };
});

async function until(condition: () => Promise<boolean>, timeoutMs = 10_000): Promise<void> {
  for (const deadline = Date.now() + timeoutMs; !(await condition()); await sleep(20)) {
    if (Date.now() > deadline) throw new Error('timed out');
  }
}

try {
  await processor.start();
  await eventStore.append(stream, [
    { type: 'placed', data: { orderId: 'o1', item: 'book', quantity: 2 } },
    { type: 'shipped', data: { orderId: 'o1', carrier: 'postal' } },
  ]);
  await until(async () => (await snapshots.read('o1'))?.fields['status'] === 'shipped');

  const response = await app.inject({ method: 'GET', url: '/orders/o1' });
  console.log('GET /orders/o1', response.statusCode, response.body);
  if (response.statusCode !== 200 || response.json<{ carrier?: string }>().carrier !== 'postal')
    throw new Error(`unexpected answer: ${response.body}`);
  const missing = await app.inject({ method: 'GET', url: '/orders/nope' });
  if (missing.statusCode !== 404) throw new Error(`expected 404, got ${missing.statusCode}`);

  // 5. Rebuild every snapshot from the first event (after changing a handler, say), while the processor runs.
  const rebuilt = await replay({
    redis,
    eventStore,
    snapshots,
    handlers: orderSummaries.handlers,
    partitioning: { group: processor.settings.group, partitions: processor.settings.partitions },
  });
  console.log('replayed', rebuilt.done, 'of', rebuilt.total, 'events');
  const again = await app.inject({ method: 'GET', url: '/orders/o1' });
  if (again.json<{ status?: string }>().status !== 'shipped')
    throw new Error(`unexpected answer after replay: ${again.body}`);
} finally {
  // 6. Clean up: stop, remove every key the projection owns, then the stream this run made.
  await app.close();
  await processor.stop();
  await orderSummaries.remove(redis);
  await redis.del(stream, ...Object.values(eventStoreKeys).map((key) => key(stream)));
  await redis.quit();
}
