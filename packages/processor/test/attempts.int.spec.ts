import { describe, expect, it } from 'vitest';
import { EventCatalog, RedisEventStore } from '@redsource/event-store';
import {
  HandlerRegistry,
  processorKeys,
  StreamProcessor,
  type Handler,
  type ProcessorSettingsInput,
} from '@redsource/processor';
import { SnapshotStore } from '@redsource/snapshot-store';
import { z } from 'zod';
import { eventually, unique, useTestRedis } from '../../../test/support/redis.ts';

/**
 * REDSOURCE_MAX_DELIVERIES counts the processor's own handler attempts on an entry, kept in Redis so
 * they add up across restarts and partition takeovers; how often the entry was read (again from its
 * partition's applied position by every restart and every new holder of the partition) plays no part.
 */
const ctx = useTestRedis();

function jobs(handler: Handler<{ id: string }>) {
  const stream = unique('jobs');
  const keyPrefix = `${unique('job')}_`;
  const group = unique('g');
  const catalog = new EventCatalog({ [stream]: { schemas: { '*': z.object({ id: z.string() }) } } });
  const handlers = new HandlerRegistry().on<{ id: string }>(stream, '*', handler);
  const snapshots = new SnapshotStore({ redis: ctx.redis, keyPrefix });
  const processor = (consumer: string, settings: ProcessorSettingsInput = {}) =>
    ctx.track(
      new StreamProcessor({
        redis: ctx.server.client(),
        eventStore: new RedisEventStore({ redis: ctx.redis, catalog }),
        snapshots,
        handlers,
        group,
        consumer,
        blockMs: 100,
        ...settings,
      }),
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
    const poison = await ctx.redis.xadd(setup.stream, '*', 'command', 'job', 'id', 'poison');
    await ctx.redis.xadd(setup.stream, '*', 'command', 'job', 'id', 'after');
    const first = setup.processor('c1', { maxDeliveries: 4, retryBackoffMs: 400 });
    await first.start();
    expect(await eventually(async () => attempts >= 2)).toBe(true);
    // Stopped while it backs off before its third attempt: the entry stays unapplied in its partition, two attempts spent.
    await first.stop();
    expect(attempts).toBe(2);
    expect(await ctx.redis.hget(processorKeys.attempts(setup.stream, setup.group), String(poison))).toBe('2');

    // The restart reads the entry again from its partition's applied position: only its two more failures count.
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

  it('a valid entry read far more often than maxDeliveries, by restarts under its name and by processors taking its partition over, is applied once', async () => {
    let reads = 0;
    const setup = jobs((event) => {
      reads++;
      return done(event.data.id);
    });
    await ctx.redis.xadd(setup.stream, '*', 'command', 'job', 'id', 'own');
    // A rebuild's switch-over holds the stream: each holder of the partition reads the entry, runs its
    // handler (which succeeds) and cannot apply it before it is stopped, leaving it to the next holder.
    await setup.snapshots.hold(setup.stream);
    const quick = { maxDeliveries: 2, shutdownTimeoutMs: 0, leaseMs: 400, rebalanceIntervalMs: 100 };
    // 'c1' again resumes its own lease; 'c2' takes the partition over once the lease of 'c1' runs out, and the other way round.
    for (const consumer of ['c1', 'c1', 'c2', 'c1', 'c2']) {
      const before = reads;
      const holder = setup.processor(consumer, quick);
      await holder.start();
      expect(await eventually(async () => reads > before && (holder.stats()[setup.stream]?.batches ?? 0) > 0)).toBe(
        true,
      );
      await holder.stop();
    }
    expect(reads).toBeGreaterThanOrEqual(5);
    expect(await ctx.redis.hlen(processorKeys.attempts(setup.stream, setup.group))).toBe(0);

    await setup.snapshots.release(setup.stream);
    await setup.processor('c3', quick).start();
    expect(await eventually(async () => (await setup.snapshots.read('own'))?.counters['done'] === 1)).toBe(true);
    expect(await ctx.redis.xlen(processorKeys.deadLetters(setup.stream))).toBe(0);
    expect(await setup.snapshots.totals(setup.stream)).toEqual({ applied: 1, skipped: 0, deadLettered: 0 });
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
    const b = setup.processor('b', { maxDeliveries: 10, retryBackoffMs: 50 });
    const a = setup.processor('a', { maxDeliveries: 10, retryBackoffMs: 50 });
    await a.start();
    expect(await eventually(async () => failures >= 2)).toBe(true);
    await a.stop();
    expect(Number(await ctx.redis.hget(key, flaky))).toBeGreaterThanOrEqual(2);
    failing = false;
    await ctx.redis.xadd(setup.stream, '*', 'command', 'job', 'id', 'other');
    await b.start();
    expect(await eventually(async () => (await setup.snapshots.read('flaky'))?.counters['done'] === 1, 10_000)).toBe(
      true,
    );
    expect(await eventually(async () => (await ctx.redis.hexists(key, flaky)) === 0, 3_000)).toBe(true);
    await b.stop();
  });
});
