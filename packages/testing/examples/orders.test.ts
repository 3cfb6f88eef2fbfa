// A test of the orders projection with @redsource/testing, under node's own test runner:
// node --test orders.test.js (or plain node orders.test.js). It runs on a throwaway redis-server
// from PATH, or on REDIS_URL's Redis (each scenario uses keys of its own and deletes them).
import { after, before, test } from 'node:test';
import type { Redis } from 'ioredis';
import { z } from 'zod';
import { EventCatalog } from '@redsource/event-store';
import { defineProjection } from '@redsource/processor';
import { projectionTest, startRedis, type TestRedisServer } from '@redsource/testing';

const placed = z.object({ orderId: z.string(), item: z.string(), quantity: z.number().int().positive() });
const shipped = z.object({ orderId: z.string(), carrier: z.string() });
const catalog = new EventCatalog({
  orders: { stream: 'orders', schemas: { placed, shipped }, subjectFields: ['orderId'] },
});
const orderSummaries = defineProjection({
  name: 'order_summaries',
  catalog,
  keyPrefix: 'order_summary:',
  handlers: {
    orders: {
      placed: ({ data }) => ({
        snapshotId: data.orderId,
        mutations: [
          { op: 'create' },
          { op: 'setFields', fields: { item: data.item, quantity: data.quantity, status: 'placed' } },
        ],
      }),
      shipped: ({ data }) => {
        if (data.carrier === '') throw new Error('no carrier');
        return {
          snapshotId: data.orderId,
          mutations: [{ op: 'setFields', fields: { status: 'shipped', carrier: data.carrier } }],
        };
      },
    },
  },
});

let server: TestRedisServer;
let redis: Redis;
before(async () => {
  server = await startRedis();
  redis = server.client();
});
after(async () => {
  await server.stop();
});

void test('a shipped order shows its carrier', async () => {
  await projectionTest(orderSummaries, { redis })
    .given([{ type: 'placed', data: { orderId: 'o1', item: 'book', quantity: 2 } }])
    .when([{ type: 'shipped', data: { orderId: 'o1', carrier: 'postal' } }])
    .then({ o1: { item: 'book', quantity: 2, status: 'shipped', carrier: 'postal' }, o2: undefined });
});

void test('a shipment without a carrier is dead-lettered', async () => {
  await projectionTest(orderSummaries, { redis, processor: { maxDeliveries: 1 } })
    .given([{ type: 'placed', data: { orderId: 'o1', item: 'book', quantity: 1 } }])
    .when([{ type: 'shipped', data: { orderId: 'o1', carrier: '' } }])
    .thenDeadLettered(1);
});
