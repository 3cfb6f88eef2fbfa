import { randomBytes } from 'node:crypto';
import { AssertionError } from 'node:assert';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import type { Redis } from 'ioredis';
import { EventCatalog } from '@redsource/event-store';
import { defineProjection } from '@redsource/processor';
import { GivenEventDeadLetteredError, projectionTest, startRedis, type TestRedisServer } from '../src/index.ts';

let server: TestRedisServer;
let redis: Redis;
beforeAll(async () => {
  server = await startRedis();
  redis = server.client();
});
afterAll(async () => {
  await server.stop();
});

const order = z.object({ orderId: z.string(), item: z.string().optional() });
// Fixed stream and key names, as a user's projection has: the test helper makes them unique.
const catalog = new EventCatalog({
  orders: { stream: 'orders', schemas: { placed: order, shipped: order, audited: order }, subjectFields: ['orderId'] },
  payments: {
    stream: 'payments',
    schemas: { paid: z.object({ orderId: z.string(), amount: z.number() }) },
    subjectFields: ['orderId'],
  },
});
const orders = defineProjection({
  name: 'orders',
  catalog,
  keyPrefix: 'order:',
  handlers: {
    orders: {
      placed: ({ data, stream }) => ({
        snapshotId: data.orderId,
        mutations: [{ op: 'create' }, { op: 'setFields', fields: { item: data.item, status: 'placed', stream } }],
      }),
      shipped: ({ data }) => ({
        snapshotId: data.orderId,
        mutations: [{ op: 'setFields', fields: { status: 'shipped' } }],
      }),
      audited: () => {
        throw new Error('audit service is down');
      },
    },
    payments: {
      paid: ({ data }) => ({
        snapshotId: data.orderId,
        mutations: [{ op: 'setFields', fields: { paid: data.amount } }],
      }),
    },
  },
});

const keysOf = async (namespace: string) => redis.keys(`*${namespace}*`);

describe('projectionTest', () => {
  it('applies given then when events through a real processor, compares the snapshots, and deletes every key it made', async () => {
    const namespace = `ns${randomBytes(4).toString('hex')}`;
    let seen: string[] = [];
    await projectionTest(orders, { redis, namespace })
      .given([{ stream: 'orders', type: 'placed', data: { orderId: 'o1', item: 'book' } }])
      .when([
        { stream: 'orders', type: 'shipped', data: { orderId: 'o1' } },
        { stream: 'payments', type: 'paid', data: { orderId: 'o1', amount: 12 } },
      ])
      .run(async (outcome) => {
        seen = await keysOf(namespace);
        expect(await outcome.snapshot('o1')).toEqual({ item: 'book', status: 'shipped', stream: 'orders', paid: 12 });
        expect(await outcome.snapshot('o2')).toBeUndefined();
        expect(outcome.deadLetters).toEqual([]);
      });
    expect(seen.length).toBeGreaterThan(3); // streams, snapshot, cursors... all named in the namespace
    expect(seen.some((k) => k.startsWith(`${namespace}:order:`))).toBe(true);
    expect(await keysOf(namespace)).toEqual([]);
    expect(await redis.exists('orders', 'payments', 'order:o1')).toBe(0); // the projection's own names untouched
  });

  it('then() passes on the expected snapshots and rejects with a diff otherwise', async () => {
    const scenario = projectionTest(orders, { redis })
      .given({ stream: 'orders', type: 'placed', data: { orderId: 'o1', item: 'book' } })
      .when({ stream: 'orders', type: 'shipped', data: { orderId: 'o1' } });
    await scenario.then({ o1: { item: 'book', status: 'shipped', stream: 'orders' }, o2: undefined });
    const error: unknown = await scenario
      .then({ o1: { item: 'book', status: 'placed', stream: 'orders' } })
      .catch((e: unknown) => e);
    expect(error).toBeInstanceOf(AssertionError);
    expect(String((error as AssertionError).message)).toMatch(/snapshots differ[\s\S]*shipped/);
  });

  it('thenDeadLettered() counts the when events that were dead-lettered, or checks a predicate', async () => {
    const scenario = projectionTest(orders, { redis, processor: { maxDeliveries: 1 } })
      .given({ stream: 'orders', type: 'placed', data: { orderId: 'o1' } })
      .when([
        { stream: 'orders', type: 'audited', data: { orderId: 'o1' } },
        { stream: 'orders', type: 'shipped', data: { orderId: 'o1' } },
      ]);
    await scenario.thenDeadLettered(1);
    await scenario.thenDeadLettered((dead) => dead.length === 1 && /audit service is down/.test(dead[0]?.reason ?? ''));
    await expect(scenario.thenDeadLettered(0)).rejects.toThrow(/1 event\(s\) dead-lettered, expected 0/);
  });

  it('fails when a given event is dead-lettered', async () => {
    const error: unknown = await projectionTest(orders, { redis })
      .given({ stream: 'orders', type: 'audited', data: { orderId: 'o1' } })
      .then({})
      .catch((e: unknown) => e);
    expect(error).toBeInstanceOf(GivenEventDeadLetteredError);
  });

  it('runs scenarios of the same projection in parallel on one Redis', async () => {
    await Promise.all(
      Array.from({ length: 4 }, (_, i) =>
        projectionTest(orders, { redis })
          .given({ stream: 'orders', type: 'placed', data: { orderId: 'o1', item: `item-${i}` } })
          .then({ o1: { item: `item-${i}`, status: 'placed', stream: 'orders' } }),
      ),
    );
  });

  it('asks for the stream when the catalog has several', async () => {
    // @ts-expect-error -- the event's type must be one of its stream's types
    projectionTest(orders, { redis }).when({ stream: 'payments', type: 'placed', data: { orderId: 'o1' } });
    // @ts-expect-error -- and its data what that type's schema accepts
    projectionTest(orders, { redis }).when({
      stream: 'payments',
      type: 'paid',
      data: { orderId: 'o1', amount: 'twelve' },
    });
    await expect(
      projectionTest(orders, { redis })
        .when({ type: 'placed', data: { orderId: 'o1' } })
        .then({}),
    ).rejects.toThrow(/give each event its `stream`/);
  });
});
