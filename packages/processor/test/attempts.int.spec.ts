import { describe, expect, it } from 'vitest';
import { EventCatalog, RedisEventStore } from '@redsource/event-store';
import { HandlerRegistry, processorKeys, StreamProcessor, type Handler } from '@redsource/processor';
import { SnapshotStore } from '@redsource/snapshot-store';
import { z } from 'zod';
import { eventually, unique, useTestRedis } from '../../../test/support/redis.ts';

/**
 * REDSOURCE_MAX_DELIVERIES counts the processor's own handler attempts on an entry, kept in Redis so
 * they add up across restarts and claims; how often Redis handed the entry out (XPENDING's delivery
 * count, raised by every re-read and claim) plays no part.
 */
const ctx = useTestRedis();

function jobs(handler: Handler<{ id: string }>) {
  const stream = unique('jobs');
  const keyPrefix = `${unique('job')}_`;
  const group = unique('g');
  const catalog = new EventCatalog({ [stream]: { schemas: { '*': z.object({ id: z.string() }) } } });
  const handlers = new HandlerRegistry().on<{ id: string }>(stream, '*', handler);
  const snapshots = new SnapshotStore({ redis: ctx.redis, keyPrefix });
  const processor = (consumer: string, settings: { maxDeliveries?: number; retryBackoffMs?: number; claimTimeoutMs?: number; claimIntervalMs?: number } = {}) =>
    ctx.track(
      new StreamProcessor({ redis: ctx.server.client(), eventStore: new RedisEventStore({ redis: ctx.redis, catalog }), snapshots, handlers, group, consumer, blockMs: 100, ...settings }),
    );
  return { stream, group, snapshots, processor };
}

const done = (id: string) => ({ snapshotId: id, mutations: [{ op: 'increment' as const, counter: 'done' }] });

describe('handler attempts, not deliveries, count toward maxDeliveries', () => {
  it('a handler that always throws is dead-lettered after exactly maxDeliveries attempts, across a restart', async () => {
    let attempts = 0;
    const setup = jobs((event) => {
      if (event.data.id !== 'poison') return done(event.data.id);
      attempts++;
      throw new Error('always fails');
    });
    await ctx.redis.xadd(setup.stream, '*', 'command', 'job', 'id', 'poison');
    await ctx.redis.xadd(setup.stream, '*', 'command', 'job', 'id', 'after');
    const first = setup.processor('c1', { maxDeliveries: 4, retryBackoffMs: 400 });
    await first.start();
    expect(await eventually(async () => attempts >= 2)).toBe(true);
    // Stopped while it backs off before its third attempt: the entry stays pending, two attempts spent.
    await first.stop();
    expect(attempts).toBe(2);
    // Re-reading its own pending list raises the entry's delivery count; that must not count.
    await ctx.redis.xreadgroup('GROUP', setup.group, 'c1', 'STREAMS', setup.stream, '0');
    await ctx.redis.xreadgroup('GROUP', setup.group, 'c1', 'STREAMS', setup.stream, '0');

    const second = setup.processor('c1', { maxDeliveries: 4, retryBackoffMs: 20 });
    await second.start();
    const dead = processorKeys.deadLetters(setup.stream);
    expect(await eventually(async () => (await ctx.redis.xlen(dead)) === 1)).toBe(true);
    expect(await eventually(async () => (await setup.snapshots.read('after'))?.counters['done'] === 1)).toBe(true);
    await second.stop();
    expect(attempts).toBe(4);
    const [[, fields] = ['', []]] = await ctx.redis.xrange(dead, '-', '+');
    expect(fields.join(' ')).toMatch(/RS_HANDLER_FAILED: handler for 'job' failed 4 times, last: always fails/);
  });

  it('a valid entry whose delivery count is far past maxDeliveries is applied, in its own pending list or claimed', async () => {
    const setup = jobs((event) => done(event.data.id));
    await ctx.redis.xgroup('CREATE', setup.stream, setup.group, '0', 'MKSTREAM');
    const own = await ctx.redis.xadd(setup.stream, '*', 'command', 'job', 'id', 'own');
    const orphan = await ctx.redis.xadd(setup.stream, '*', 'command', 'job', 'id', 'orphan');
    // Handed out and never applied: 'own' to c1 (the consumer that restarts), 'orphan' to a consumer that died.
    await ctx.redis.xreadgroup('GROUP', setup.group, 'c1', 'COUNT', 1, 'STREAMS', setup.stream, '>');
    await ctx.redis.xreadgroup('GROUP', setup.group, 'gone', 'COUNT', 1, 'STREAMS', setup.stream, '>');
    await ctx.redis.xclaim(setup.stream, setup.group, 'c1', 0, String(own), 'RETRYCOUNT', 50);
    await ctx.redis.xclaim(setup.stream, setup.group, 'gone', 0, String(orphan), 'RETRYCOUNT', 50);

    await setup.processor('c1', { maxDeliveries: 5, claimTimeoutMs: 100, claimIntervalMs: 50 }).start();
    expect(await eventually(async () => (await setup.snapshots.read('orphan'))?.counters['done'] === 1)).toBe(true);
    expect((await setup.snapshots.read('own'))?.counters['done']).toBe(1);
    expect(await ctx.redis.xlen(processorKeys.deadLetters(setup.stream))).toBe(0);
    expect(await setup.snapshots.totals(setup.stream)).toEqual({ applied: 2, skipped: 0, deadLettered: 0 });
  });

  it('a count left by a process that stopped is forgotten when another process applies the entry', async () => {
    let failing = true;
    let failures = 0;
    const setup = jobs((event) => {
      if (event.data.id === 'flaky' && failing) {
        failures++;
        throw new Error('not yet');
      }
      return done(event.data.id);
    });
    const flaky = String(await ctx.redis.xadd(setup.stream, '*', 'command', 'job', 'id', 'flaky'));
    const key = processorKeys.attempts(setup.stream, setup.group);
    const b = setup.processor('b', { maxDeliveries: 10, retryBackoffMs: 50, claimTimeoutMs: 300, claimIntervalMs: 50 });
    const a = setup.processor('a', { maxDeliveries: 10, retryBackoffMs: 50, claimTimeoutMs: 300, claimIntervalMs: 50 });
    await a.start();
    expect(await eventually(async () => failures >= 2)).toBe(true);
    await a.stop();
    expect(Number(await ctx.redis.hget(key, flaky))).toBeGreaterThanOrEqual(2);
    failing = false;
    await ctx.redis.xadd(setup.stream, '*', 'command', 'job', 'id', 'other');
    await b.start();
    expect(await eventually(async () => (await setup.snapshots.read('flaky'))?.counters['done'] === 1, 10_000)).toBe(true);
    expect(await eventually(async () => (await ctx.redis.hexists(key, flaky)) === 0, 3_000)).toBe(true);
    await b.stop();
  });
});
