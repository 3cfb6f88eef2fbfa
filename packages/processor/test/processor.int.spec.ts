import { describe, expect, it } from 'vitest';
import { EventCatalog, RedisEventStore } from '@redsource/event-store';
import { DeadLetters, HandlerRegistry, processorKeys, replay, StreamProcessor, type ReplayProgress } from '@redsource/processor';
import { compareEntryIds, SnapshotStore } from '@redsource/snapshot-store';
import { z } from 'zod';
import { eventually, pendingCount, unique, useTestRedis } from '../../../test/support/redis.ts';
import { rejection } from '../../../test/support/rejection.ts';
import { isolatedProfileSetup } from '../../../test/support/profile-setup.ts';
import { randomCommands, referenceFold, snapshotDifferences, xaddAll } from '../../../test/support/model.ts';

const ctx = useTestRedis();

const started = async (processor: StreamProcessor) => {
  ctx.track(processor);
  await processor.start();
  return processor;
};

describe('StreamProcessor with the profile handlers', () => {
  it('folds entries published before its first start into snapshots and acks them', async () => {
    const setup = isolatedProfileSetup(ctx.redis);
    const commands = randomCommands(setup.streams, 400, 20, 1);
    await xaddAll(ctx.redis, commands);
    const processor = await started(setup.processor(ctx.server.client()));
    const expected = await referenceFold(setup.eventStore, setup.streams);
    expect(await eventually(async () => (await snapshotDifferences(setup.snapshots, expected)).length === 0)).toBe(true);
    // The script has run before its reply reaches the processor's counters: wait for those too.
    const applied = () => Object.values(processor.stats()).reduce((n, s) => n + s.applied, 0);
    expect(await eventually(async () => applied() === commands.length)).toBe(true);
    for (const stream of Object.values(setup.streams)) {
      expect(await eventually(async () => (await pendingCount(ctx.redis, stream, setup.group)) === 0)).toBe(true);
    }
  });

  it('resumes a restarted consumer from its own pending entries first, with nothing lost or doubled', async () => {
    const setup = isolatedProfileSetup(ctx.redis);
    await started(setup.processor(ctx.server.client(), { consumer: 'c1' })).then((p) => p.stop());
    const commands = randomCommands(setup.streams, 300, 10, 2);
    await xaddAll(ctx.redis, commands);
    // 'c1' was handed entries and died before applying them: they sit in its pending list.
    for (const stream of Object.values(setup.streams)) {
      await ctx.redis.xreadgroup('GROUP', setup.group, 'c1', 'COUNT', 50, 'STREAMS', stream, '>');
    }
    const pendingBefore = await pendingCount(ctx.redis, setup.streams.updates, setup.group);
    expect(pendingBefore).toBeGreaterThan(0);
    const restarted = await started(setup.processor(ctx.server.client(), { consumer: 'c1' }));
    const expected = await referenceFold(setup.eventStore, setup.streams);
    expect(await eventually(async () => (await snapshotDifferences(setup.snapshots, expected)).length === 0)).toBe(true);
    const applied = () => Object.values(restarted.stats()).reduce((n, s) => n + s.applied, 0);
    expect(await eventually(async () => applied() === commands.length)).toBe(true);
  });

  it('never applies an entry twice when it is redelivered after being applied', async () => {
    const setup = isolatedProfileSetup(ctx.redis);
    await xaddAll(ctx.redis, [[setup.streams.activity, 'user_id', '1', 'command', 'kick', 'object', 'x']]);
    const first = await started(setup.processor(ctx.server.client(), { consumer: 'a' }));
    await eventually(async () => (await setup.snapshots.read('1'))?.counters['kick'] === 1);
    await first.stop();
    // Simulate a crash between apply and ack: make the entry pending again for consumer 'a'.
    await ctx.redis.xgroup('SETID', setup.streams.activity, setup.group, '0');
    await ctx.redis.xreadgroup('GROUP', setup.group, 'a', 'STREAMS', setup.streams.activity, '>');
    const second = await started(setup.processor(ctx.server.client(), { consumer: 'a' }));
    await eventually(async () => (await pendingCount(ctx.redis, setup.streams.activity, setup.group)) === 0);
    expect(second.stats()[setup.streams.activity]?.skipped).toBe(1);
    expect((await setup.snapshots.read('1'))?.counters['kick']).toBe(1);
  });

  it('shares a group between processors with the snapshots equal to the fold of the log', async () => {
    const setup = isolatedProfileSetup(ctx.redis);
    const processors = await Promise.all([1, 2, 3].map(() => started(setup.processor(ctx.server.client(), { batchSize: 20 }))));
    const commands = randomCommands(setup.streams, 3000, 25, 3);
    await xaddAll(ctx.redis, commands, 100);
    const expected = await referenceFold(setup.eventStore, setup.streams);
    const settled = await eventually(async () => (await snapshotDifferences(setup.snapshots, expected)).length === 0, 20_000);
    expect(settled ? [] : await snapshotDifferences(setup.snapshots, expected)).toEqual([]);
    const applied = () => processors.flatMap((p) => Object.values(p.stats())).reduce((n, s) => n + s.applied, 0);
    expect(await eventually(async () => applied() === commands.length)).toBe(true);
    await new Promise((r) => setTimeout(r, 200));
    expect(applied()).toBe(commands.length);
  });

  it('claims the pending entries of a consumer that died for good and removes it from the group', async () => {
    const setup = isolatedProfileSetup(ctx.redis);
    await started(setup.processor(ctx.server.client(), { consumer: 'ghost' })).then((p) => p.stop());
    await xaddAll(ctx.redis, randomCommands(setup.streams, 100, 5, 4));
    for (const stream of Object.values(setup.streams)) {
      await ctx.redis.xreadgroup('GROUP', setup.group, 'ghost', 'STREAMS', stream, '>');
    }
    await ctx.redis.hset(processorKeys.heartbeats(setup.group), 'ghost', Date.now() - 60_000);
    const living = await started(setup.processor(ctx.server.client(), { claimTimeoutMs: 300, claimIntervalMs: 100, gapFillAfterMs: 60_000 }));
    const expected = await referenceFold(setup.eventStore, setup.streams);
    expect(await eventually(async () => (await snapshotDifferences(setup.snapshots, expected)).length === 0)).toBe(true);
    expect(Object.values(living.stats()).reduce((n, s) => n + s.claimed, 0)).toBeGreaterThan(0);
    const consumers = async () => ((await ctx.redis.xinfo('CONSUMERS', setup.streams.updates, setup.group)) as unknown[][]).map((c) => String(c[1]));
    expect(await eventually(async () => !(await consumers()).includes('ghost'))).toBe(true);
  });

  it('dead-letters undecodable and invalid entries with the reason and keeps going', async () => {
    const setup = isolatedProfileSetup(ctx.redis);
    await xaddAll(ctx.redis, [
      [setup.streams.updates, 'user_id', '1', 'command', 'register', 'name', 'A'],
      [setup.streams.updates, 'user_id', '1', 'no_type_here', 'x'],
      [setup.streams.updates, 'user_id', '1', 'command', 'register'],
      [setup.streams.updates, 'user_id', '1', 'command', 'update', 'surname', 'B'],
    ]);
    const processor = await started(setup.processor(ctx.server.client()));
    await eventually(async () => (await setup.snapshots.read('1'))?.fields['surname'] === 'B');
    expect((await setup.snapshots.read('1'))?.fields).toEqual({ name: 'A', surname: 'B' });
    const dead = (await ctx.redis.xrange(processorKeys.deadLetters(setup.streams.updates), '-', '+')).map(([, f]) => f);
    expect(dead).toHaveLength(2);
    expect(dead[0]?.join(' ')).toContain('RS_ENTRY_UNDECODABLE');
    expect(dead[1]?.join(' ')).toMatch(/RS_EVENT_INVALID.*name/);
    expect(processor.stats()[setup.streams.updates]?.deadLettered).toBe(2);
  });
});

describe('StreamProcessor with handlers of your own', () => {
  const catalog = (stream: string) => new EventCatalog({ [stream]: { schemas: { '*': z.object({ id: z.string() }) } } });

  it('retries a throwing handler with backoff, then dead-letters it after maxDeliveries while later entries still apply', async () => {
    const stream = unique('jobs');
    const keyPrefix = `${unique('job')}_`;
    const attempts = new Map<string, number>();
    const handlers = new HandlerRegistry().on<{ id: string }>(stream, '*', (event) => {
      const n = (attempts.get(event.data.id) ?? 0) + 1;
      attempts.set(event.data.id, n);
      if (event.data.id === 'poison') throw new Error('always fails');
      if (event.data.id === 'flaky' && n < 3) throw new Error('fails twice');
      return { snapshotId: event.data.id, mutations: [{ op: 'increment', counter: 'done' }] };
    });
    const eventStore = new RedisEventStore({ redis: ctx.redis, catalog: catalog(stream) });
    const snapshots = new SnapshotStore({ redis: ctx.redis, keyPrefix });
    const processor = new StreamProcessor({ redis: ctx.redis, eventStore, snapshots, handlers, group: unique('g'), maxDeliveries: 4, retryBackoffMs: 5, blockMs: 100 });
    for (const id of ['flaky', 'poison', 'after']) await ctx.redis.xadd(stream, '*', 'command', 'job', 'id', id);
    await started(processor);
    expect(await eventually(async () => (await snapshots.read('after'))?.counters['done'] === 1)).toBe(true);
    expect((await snapshots.read('flaky'))?.counters['done']).toBe(1);
    expect(attempts.get('flaky')).toBe(3);
    expect(attempts.get('poison')).toBe(4);
    const dead = await ctx.redis.xrange(processorKeys.deadLetters(stream), '-', '+');
    expect(dead).toHaveLength(1);
    expect(dead[0]?.[1].join(' ')).toContain('RS_HANDLER_FAILED');
  });

  it('rejects bad options with the field named', () => {
    const stream = unique('jobs');
    expect(
      () =>
        new StreamProcessor({
          redis: ctx.redis,
          eventStore: new RedisEventStore({ redis: ctx.redis, catalog: catalog(stream) }),
          snapshots: new SnapshotStore({ redis: ctx.redis, keyPrefix: 'x_' }),
          handlers: new HandlerRegistry().on(stream, '*', () => undefined),
          batchSize: 0,
        }),
    ).toThrow(/batchSize/);
  });
});

describe('replay', () => {
  it('rebuilds snapshots identical to the live ones, and the live processor goes on after it', async () => {
    const setup = isolatedProfileSetup(ctx.redis);
    await xaddAll(ctx.redis, randomCommands(setup.streams, 500, 15, 5));
    await started(setup.processor(ctx.server.client()));
    const expected = await referenceFold(setup.eventStore, setup.streams);
    await eventually(async () => (await snapshotDifferences(setup.snapshots, expected)).length === 0);
    const live = await dumpSnapshots(setup.keyPrefix);
    const progress: number[] = [];
    const result = await replay({ redis: ctx.redis, eventStore: setup.eventStore, snapshots: setup.snapshots, handlers: setup.handlers, pageSize: 100, onProgress: (p) => progress.push(p.done) });
    expect(result.done).toBe(500);
    expect(progress.length).toBeGreaterThanOrEqual(5);
    expect(await dumpSnapshots(setup.keyPrefix, ['_rev', '_rebuild'])).toEqual(stripFields(live, ['_rev', '_rebuild']));
    await xaddAll(ctx.redis, [[setup.streams.activity, 'user_id', '1', 'command', 'wave']]);
    expect(await eventually(async () => (await setup.snapshots.read('1'))?.counters['wave'] === 1)).toBe(true);
  });
});

async function dumpSnapshots(prefix: string, without: string[] = []): Promise<Record<string, Record<string, string>>> {
  const keys = (await ctx.redis.keys(`${prefix}*`)).sort();
  const out: Record<string, Record<string, string>> = {};
  for (const key of keys) out[key] = await ctx.redis.hgetall(key);
  return stripFields(out, without);
}

function stripFields(dump: Record<string, Record<string, string>>, without: string[]) {
  return Object.fromEntries(Object.entries(dump).map(([k, h]) => [k, Object.fromEntries(Object.entries(h).filter(([f]) => !without.includes(f)))]));
}

describe('regressions: replay deletes only snapshot hashes and counts what it steps over', () => {
  /** A stream with 'place' (changes a snapshot) and 'note' (valid, changes nothing), and a snapshot store on a `p_<unique>_` prefix. */
  async function ordersSetup() {
    const stream = unique('orders_log');
    const keyPrefix = `p_${unique('r')}_`;
    const catalog = new EventCatalog({ [stream]: { schemas: { place: z.object({ id: z.string() }), note: z.object({ id: z.string() }) } } });
    const handlers = new HandlerRegistry()
      .on<{ id: string }>(stream, 'place', (event) => ({ snapshotId: event.data.id, mutations: [{ op: 'create' }, { op: 'increment', counter: 'orders' }] }))
      .on(stream, 'note', () => undefined);
    const eventStore = new RedisEventStore({ redis: ctx.redis, catalog });
    const snapshots = new SnapshotStore({ redis: ctx.redis, keyPrefix });
    const ids = await xaddAll(ctx.redis, [
      [stream, 'command', 'place', 'id', 'a'],
      [stream, 'command', 'note', 'id', 'a'],
      [stream, 'no_type_here', 'x'],
      [stream, 'command', 'place', 'id', 'b'],
      [stream, 'command', 'place', 'id', 'a'],
    ]);
    return { stream, keyPrefix, handlers, eventStore, snapshots, ids };
  }

  it('leaves streams, strings and hashes that are not snapshot ids under the prefix alone, and rebuilds the snapshot hashes', async () => {
    const { stream, keyPrefix, handlers, eventStore, snapshots, ids } = await ordersSetup();
    // Keys that share the prefix but are not snapshot hashes (':' cannot be in a snapshot id).
    await ctx.redis.xadd(`${keyPrefix}orders`, '*', 'k', 'v');
    await ctx.redis.set(`${keyPrefix}str`, 'keep me');
    await ctx.redis.hset(`${keyPrefix}not:an:id`, 'f', '1');
    // Snapshot hashes: one out of date, one that no entry makes.
    await ctx.redis.hset(`${keyPrefix}a`, '_exists', '1', 'c:orders', '99', 'f:junk', '"x"');
    await ctx.redis.hset(`${keyPrefix}stale`, '_exists', '1', 'f:name', '"old"');

    await replay({ redis: ctx.redis, eventStore, snapshots, handlers, pageSize: 2 });

    expect(await ctx.redis.type(`${keyPrefix}orders`)).toBe('stream');
    expect(await ctx.redis.xlen(`${keyPrefix}orders`)).toBe(1);
    expect(await ctx.redis.get(`${keyPrefix}str`)).toBe('keep me');
    expect(await ctx.redis.hgetall(`${keyPrefix}not:an:id`)).toEqual({ f: '1' });

    expect(await snapshots.read('a')).toMatchObject({ exists: true, fields: {}, counters: { orders: 2 } });
    expect(await snapshots.read('b')).toMatchObject({ exists: true, counters: { orders: 1 } });
    expect(await snapshots.read('stale')).toBeUndefined();
    expect(await snapshots.cursor(stream)).toBe(ids[4]);
    // The bad entry is dead-lettered once, however many passes go over it.
    expect(await ctx.redis.xlen(processorKeys.deadLetters(stream))).toBe(1);
    await replay({ redis: ctx.redis, eventStore, snapshots, handlers, pageSize: 2 });
    expect(await ctx.redis.xlen(processorKeys.deadLetters(stream))).toBe(1);
  });

  it('counts as stepped only the entries it cannot apply, not valid events without changes; applied excludes them', async () => {
    const { stream, handlers, eventStore, snapshots } = await ordersSetup();
    const progress: ReplayProgress[] = [];
    const result = await replay({ redis: ctx.redis, eventStore, snapshots, handlers, pageSize: 2, onProgress: (p) => progress.push(p) });

    expect(result).toMatchObject({ stream, done: 5, total: 5, applied: 4, stepped: 1 });
    expect(progress.at(-1)).toEqual(result);
    expect(progress.filter((p) => p.phase === 'building' && p.done > 0).map((p) => [p.done, p.applied, p.stepped])).toEqual([
      [2, 2, 0],
      [4, 3, 1],
      [5, 4, 1],
    ]);
    expect(progress.map((p) => p.phase)).toEqual(expect.arrayContaining(['building', 'catching-up', 'switching', 'done']));
  });
});

describe('DeadLetters', () => {
  it('lists and shows what a processor dead-lettered, retries it into the stream and drops it', async () => {
    const setup = isolatedProfileSetup(ctx.redis);
    const stream = setup.streams.updates;
    const badFields = [['user_id', '1', 'no_type_here', 'x'], ['user_id', '2', 'still_no_type', 'y']];
    const before = Date.now();
    const [, bad1, bad2] = await xaddAll(ctx.redis, [
      [stream, 'user_id', '1', 'command', 'register', 'name', 'A'],
      [stream, ...(badFields[0] ?? [])],
      [stream, ...(badFields[1] ?? [])],
    ]);
    const deadLetters = new DeadLetters(ctx.redis);
    const processor = await started(setup.processor(ctx.server.client()));
    expect(await eventually(async () => (await deadLetters.count(stream)) === 2)).toBe(true);
    await processor.stop();

    const listed = await deadLetters.list(stream);
    expect(listed.map((d) => d.entryId)).toEqual([bad1, bad2]);
    expect(listed.map((d) => d.fields)).toEqual(badFields);
    const [first, second] = listed;
    if (!first || !second) throw new Error('expected two dead letters');
    expect(first).toMatchObject({ stream, entryId: bad1, group: setup.group });
    expect(first.reason).toContain('RS_ENTRY_UNDECODABLE');
    expect(first.deadAt).toBeGreaterThanOrEqual(before - 5_000);
    expect(first.deadAt).toBeLessThanOrEqual(Date.now() + 5_000);
    expect(await deadLetters.show(stream, first.id)).toEqual(first);
    expect(await deadLetters.list(stream, { count: 1 })).toEqual([first]);
    expect(await deadLetters.list(stream, { after: first.id })).toEqual([second]);

    const lengthBefore = await ctx.redis.xlen(stream);
    const newId = await deadLetters.retry(stream, first.id);
    if (newId === undefined) throw new Error('retry found no dead letter');
    expect(compareEntryIds(newId, bad1 ?? '')).toBeGreaterThan(0);
    expect(compareEntryIds(newId, bad2 ?? '')).toBeGreaterThan(0);
    const [last] = await ctx.redis.xrevrange(stream, '+', '-', 'COUNT', 1);
    expect(last).toEqual([newId, badFields[0]]);
    expect(await ctx.redis.xlen(stream)).toBe(lengthBefore + 1);
    expect(await deadLetters.show(stream, first.id)).toBeUndefined();
    expect(await deadLetters.list(stream)).toEqual([second]);
    // A second retry of the same dead letter appends nothing.
    expect(await deadLetters.retry(stream, first.id)).toBeUndefined();
    expect(await ctx.redis.xlen(stream)).toBe(lengthBefore + 1);

    expect(await deadLetters.drop(stream, second.id)).toBe(true);
    expect(await deadLetters.count(stream)).toBe(0);
    expect(await deadLetters.drop(stream, second.id)).toBe(false);
    expect(await ctx.redis.xlen(stream)).toBe(lengthBefore + 1);

    expect(await deadLetters.retry(stream, '1-1')).toBeUndefined();
    expect(await deadLetters.drop(stream, '1-1')).toBe(false);
    expect(await deadLetters.show(stream, '1-1')).toBeUndefined();
    expect(await deadLetters.list(unique('nothing_dead'))).toEqual([]);
  });

  it('keeps the dead letter when the entry cannot be appended again', async () => {
    const setup = isolatedProfileSetup(ctx.redis);
    const stream = setup.streams.friends;
    await xaddAll(ctx.redis, [[stream, 'user_id', '1', 'command', 'add']]);
    const deadLetters = new DeadLetters(ctx.redis);
    const processor = await started(setup.processor(ctx.server.client()));
    expect(await eventually(async () => (await deadLetters.count(stream)) === 1)).toBe(true);
    await processor.stop();
    const [dead] = await deadLetters.list(stream);
    if (!dead) throw new Error('expected a dead letter');
    expect(dead.reason).toContain('RS_EVENT_INVALID');

    // The stream key now holds something else: the XADD fails, and the dead letter must stay.
    await ctx.redis.unlink(stream);
    await ctx.redis.set(stream, 'not a stream');
    expect(await rejection(deadLetters.retry(stream, dead.id))).toBeInstanceOf(Error);
    expect(await deadLetters.show(stream, dead.id)).toEqual(dead);
    expect(await ctx.redis.get(stream)).toBe('not a stream');
  });
});
