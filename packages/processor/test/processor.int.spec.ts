import { describe, expect, it } from 'vitest';
import { EventCatalog, RedisEventStore } from '@redsource/event-store';
import {
  DeadLetters,
  HandlerRegistry,
  partitionKeys,
  processorKeys,
  replay,
  StreamProcessor,
  type ReplayProgress,
} from '@redsource/processor';
import { compareEntryIds, SnapshotStore, type ApplyBatchInput, type ApplyBatchResult } from '@redsource/snapshot-store';
import { z } from 'zod';
import { PartitionOwnership, type HeldLease } from '../src/partitions/ownership.ts';
import { unprocessed, type Unprocessed } from '../../../test/support/backlog.ts';
import { eventually, unique, useTestRedis } from '../../../test/support/redis.ts';
import { rejection } from '../../../test/support/rejection.ts';
import { isolatedProfileSetup } from '../../../test/support/profile-setup.ts';
import { randomCommands, referenceFold, snapshotDifferences, xaddAll } from '../../../test/support/model.ts';

const ctx = useTestRedis();

const started = async (processor: StreamProcessor) => {
  ctx.track(processor);
  await processor.start();
  return processor;
};

/** The processor's default partition count. */
const PARTITIONS = 12;
type Setup = ReturnType<typeof isolatedProfileSetup>;

/** The setup's streams in the order the group shares their units out (by name): what a round is given. */
const sortedStreams = (setup: Setup) => Object.values(setup.streams).sort();
/** The units (a partition of a stream) of the setup's three streams. */
const UNITS = 3 * PARTITIONS;
/** A unit, to compare and look up. */
const unit = (held: { stream: string; partition: number }) => `${held.stream}/${held.partition}`;

/** The snapshot totals over the setup's three streams. */
async function totals(setup: Setup) {
  const sum = { applied: 0, skipped: 0, deadLettered: 0 };
  for (const stream of Object.values(setup.streams)) {
    const t = await setup.snapshots.totals(stream);
    sum.applied += t.applied;
    sum.skipped += t.skipped;
    sum.deadLettered += t.deadLettered;
  }
  return sum;
}

/** What is left of one stream: its entries after their partition's cursor, and what is pending in the group. */
const unprocessedOf = (setup: Setup, stream: string) =>
  unprocessed(ctx.redis, stream, setup.group, setup.snapshots, setup.eventStore.catalog.subjectFields(stream));

async function unprocessedAll(setup: Setup): Promise<Unprocessed> {
  let unapplied = 0;
  let pending = 0;
  for (const stream of Object.values(setup.streams)) {
    const u = await unprocessedOf(setup, stream);
    unapplied += u.unapplied;
    pending += u.pending;
  }
  return { unapplied, pending };
}

/** What a processor does on taking units: claims each partition of a stream (its epoch) with its lease's fencing token. */
async function claimPartitions(
  setup: Setup,
  ownership: PartitionOwnership,
  leases: ReadonlyMap<string, HeldLease>,
): Promise<void> {
  for (const { stream, partition, token } of leases.values()) {
    await ownership.take(
      partitionKeys.epoch(stream, setup.group, partition),
      setup.snapshots.cursorKey(stream, partition),
      token,
    );
  }
}

/** A real snapshot store whose first apply runs in Redis and then loses its reply, as when the connection drops right after. */
class ReplyLostOnce extends SnapshotStore {
  lost = 0;
  override async applyBatch(input: ApplyBatchInput): Promise<ApplyBatchResult> {
    const result = await super.applyBatch(input);
    if (this.lost === 0 && result.applied > 0) {
      this.lost++;
      throw Object.assign(new Error('read ECONNRESET'), { code: 'ECONNRESET' });
    }
    return result;
  }
}

describe('StreamProcessor with the profile handlers', () => {
  it('folds entries published before its first start into snapshots, every one of them', async () => {
    const setup = isolatedProfileSetup(ctx.redis);
    const commands = randomCommands(setup.streams, 400, 20, 1);
    await xaddAll(ctx.redis, commands);
    const processor = await started(setup.processor(ctx.server.client()));
    const expected = await referenceFold(setup.eventStore, setup.streams);
    expect(await eventually(async () => (await snapshotDifferences(setup.snapshots, expected)).length === 0)).toBe(
      true,
    );
    // The script has run before its reply reaches the processor's counters: wait for those too.
    const applied = () => Object.values(processor.stats()).reduce((n, s) => n + s.applied, 0);
    expect(await eventually(async () => applied() === commands.length)).toBe(true);
    // Nothing left behind: no entry after its partition's cursor, nothing pending in the group.
    for (const stream of Object.values(setup.streams))
      expect(await unprocessedOf(setup, stream)).toEqual({ unapplied: 0, pending: 0 });
  });

  it('resumes a restarted processor on its own partitions at once (no lease wait), from where each is applied, with nothing lost or doubled', async () => {
    const setup = isolatedProfileSetup(ctx.redis);
    const earlier = randomCommands(setup.streams, 100, 10, 2);
    await xaddAll(ctx.redis, earlier);
    const first = await started(setup.processor(ctx.server.client(), { consumer: 'c1' }));
    expect(await eventually(async () => (await totals(setup)).applied === earlier.length)).toBe(true);
    await first.stop();
    // Then 'c1' crashed: it held the leases (for a minute), new entries came, and it died before applying them.
    const commands = randomCommands(setup.streams, 300, 10, 20);
    await xaddAll(ctx.redis, commands);
    const ownership = new PartitionOwnership(ctx.redis, setup.group, 'c1', PARTITIONS, 60_000);
    const leases = (await ownership.round(sortedStreams(setup))).held;
    expect(leases.size).toBe(UNITS);
    await claimPartitions(setup, ownership, leases);
    expect((await unprocessedAll(setup)).unapplied).toBe(commands.length);

    const restarted = await started(setup.processor(ctx.server.client(), { consumer: 'c1' }));
    const expected = await referenceFold(setup.eventStore, setup.streams);
    // Well within the lease: it goes on with its own leases instead of waiting for them to run out.
    expect(
      await eventually(async () => (await snapshotDifferences(setup.snapshots, expected)).length === 0, 5_000),
    ).toBe(true);
    expect(restarted.partitions.map((p) => [p.stream, p.partition, p.token])).toEqual(
      [...leases.values()]
        .sort((a, b) => (a.stream < b.stream ? -1 : a.stream > b.stream ? 1 : a.partition - b.partition))
        .map((l) => [l.stream, l.partition, l.token]),
    );
    const applied = () => Object.values(restarted.stats()).reduce((n, s) => n + s.applied, 0);
    expect(await eventually(async () => applied() === commands.length)).toBe(true);
    expect(await totals(setup)).toEqual({ applied: earlier.length + commands.length, skipped: 0, deadLettered: 0 });
    expect(await unprocessedAll(setup)).toEqual({ unapplied: 0, pending: 0 });
  });

  it('never applies an entry twice when it is read again after being applied: its reply lost, or a new holder of its partition', async () => {
    const setup = isolatedProfileSetup(ctx.redis);
    const stream = setup.streams.activity;
    await xaddAll(ctx.redis, [[stream, 'user_id', '1', 'command', 'kick', 'object', 'x']]);
    // The apply script runs and its reply is lost with the connection: the processor sends the same batch again.
    const client = ctx.server.client();
    const snapshots = new ReplyLostOnce({ redis: client, keyPrefix: setup.keyPrefix, projection: 'profiles' });
    const first = await started(
      new StreamProcessor({
        redis: client,
        eventStore: new RedisEventStore({ redis: client, catalog: setup.eventStore.catalog }),
        snapshots,
        handlers: setup.handlers,
        group: setup.group,
        consumer: 'a',
        blockMs: 100,
      }),
    );
    expect(await eventually(async () => first.stats()[stream]?.skipped === 1)).toBe(true);
    expect(snapshots.lost).toBe(1);
    expect((await setup.snapshots.read('1'))?.counters['kick']).toBe(1);
    expect(await setup.snapshots.totals(stream)).toEqual({ applied: 1, skipped: 1, deadLettered: 0 });
    await first.stop();

    // A new processor of the group takes the partitions of every stream over: it reads the stream
    // from the partitions' cursors (the group's own position never moved: nobody reads through it)
    // and applies nothing again.
    expect((await unprocessedOf(setup, stream)).unapplied).toBe(0);
    const second = await started(setup.processor(ctx.server.client(), { consumer: 'b' }));
    expect(await eventually(async () => second.partitions.length === UNITS)).toBe(true);
    await new Promise((r) => setTimeout(r, 300));
    expect(second.stats()[stream]?.applied).toBe(0);
    expect((await setup.snapshots.read('1'))?.counters['kick']).toBe(1);
    expect((await setup.snapshots.totals(stream)).applied).toBe(1);
    expect(await unprocessedOf(setup, stream)).toEqual({ unapplied: 0, pending: 0 });
  });

  it('shares a group between processors with the snapshots equal to the fold of the log', async () => {
    const setup = isolatedProfileSetup(ctx.redis);
    const processors = await Promise.all(
      [1, 2, 3].map(() => started(setup.processor(ctx.server.client(), { batchSize: 20, rebalanceIntervalMs: 100 }))),
    );
    const commands = randomCommands(setup.streams, 3000, 25, 3);
    await xaddAll(ctx.redis, commands, 100);
    const expected = await referenceFold(setup.eventStore, setup.streams);
    const settled = await eventually(
      async () => (await snapshotDifferences(setup.snapshots, expected)).length === 0,
      20_000,
    );
    expect(settled ? [] : await snapshotDifferences(setup.snapshots, expected)).toEqual([]);
    const applied = () => processors.flatMap((p) => Object.values(p.stats())).reduce((n, s) => n + s.applied, 0);
    expect(await eventually(async () => applied() === commands.length)).toBe(true);
    await new Promise((r) => setTimeout(r, 200));
    expect(applied()).toBe(commands.length);
    // Shared fairly: 36 units (3 streams x 12 partitions), 12 each, every one held by exactly one of them.
    expect(await eventually(async () => processors.every((p) => p.partitions.length === UNITS / 3))).toBe(true);
    expect(processors.flatMap((p) => p.partitions.map(unit)).sort()).toEqual(
      Object.values(setup.streams)
        .flatMap((stream) => [...Array(PARTITIONS).keys()].map((partition) => unit({ stream, partition })))
        .sort(),
    );
    expect(processors.every((p) => p.share.members === 3 && p.share.share === UNITS / 3)).toBe(true);
  });

  it('takes over the partitions of a processor that died for good once its lease runs out, and drops it from the group', async () => {
    const setup = isolatedProfileSetup(ctx.redis);
    await started(setup.processor(ctx.server.client(), { consumer: 'ghost' })).then((p) => p.stop());
    const commands = randomCommands(setup.streams, 100, 5, 4);
    await xaddAll(ctx.redis, commands);
    // 'ghost' holds every partition of every stream with a 1 s lease, and died before applying anything.
    const ghost = new PartitionOwnership(ctx.redis, setup.group, 'ghost', PARTITIONS, 1_000);
    const ghostLeases = (await ghost.round(sortedStreams(setup))).held;
    expect(ghostLeases.size).toBe(UNITS);
    await claimPartitions(setup, ghost, ghostLeases);
    const ghostTokens = new Map([...ghostLeases.values()].map((l) => [unit(l), l.token]));
    const living = await started(
      setup.processor(ctx.server.client(), { leaseMs: 1_000, rebalanceIntervalMs: 100, gapFillAfterMs: 60_000 }),
    );
    // While the ghost's leases run, its partitions are its own: nothing is applied by another.
    await new Promise((r) => setTimeout(r, 300));
    expect(living.partitions).toEqual([]);
    expect((await totals(setup)).applied).toBe(0);

    const expected = await referenceFold(setup.eventStore, setup.streams);
    expect(await eventually(async () => (await snapshotDifferences(setup.snapshots, expected)).length === 0)).toBe(
      true,
    );
    expect(Object.values(living.stats()).reduce((n, s) => n + s.claimed, 0)).toBeGreaterThan(0);
    expect(living.partitions).toHaveLength(UNITS);
    // Each with a later fencing token than the ghost's, so the ghost could no longer write there.
    for (const held of living.partitions) {
      expect(ghostTokens.has(unit(held))).toBe(true);
      expect(Number(held.token)).toBeGreaterThan(Number(ghostTokens.get(unit(held))));
    }
    expect(await totals(setup)).toEqual({ applied: commands.length, skipped: 0, deadLettered: 0 });
    expect(await unprocessedAll(setup)).toEqual({ unapplied: 0, pending: 0 });
    expect(await ctx.redis.zscore(partitionKeys.members(setup.group), 'ghost')).toBeNull();
    // The ghost come back to life: its apply, with its old token, is refused and writes nothing.
    const stream = setup.streams.activity;
    const { partition, token } = [...ghostLeases.values()].find((l) => l.stream === stream) as HeldLease;
    const cursor = await setup.snapshots.cursor(stream, partition);
    const stale = setup.snapshots.applyBatch({
      stream,
      entries: [],
      deadLetterStream: processorKeys.deadLetters(stream),
      partition: { index: partition, readFrom: cursor, readThrough: '9999999999999-0' },
      fence: { key: partitionKeys.epoch(stream, setup.group, partition), token, code: 'RS_PARTITION_LOST' },
    });
    expect(String(await rejection(stale))).toMatch(/RS_PARTITION_LOST/);
    expect(await setup.snapshots.cursor(stream, partition)).toBe(cursor);
    expect(await totals(setup)).toEqual({ applied: commands.length, skipped: 0, deadLettered: 0 });
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
  const catalog = (stream: string) =>
    new EventCatalog({ [stream]: { schemas: { '*': z.object({ id: z.string() }) } } });

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
    const processor = new StreamProcessor({
      redis: ctx.redis,
      eventStore,
      snapshots,
      handlers,
      group: unique('g'),
      maxDeliveries: 4,
      retryBackoffMs: 5,
      blockMs: 100,
    });
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
    const result = await replay({
      redis: ctx.redis,
      eventStore: setup.eventStore,
      snapshots: setup.snapshots,
      handlers: setup.handlers,
      pageSize: 100,
      onProgress: (p) => progress.push(p.done),
    });
    expect(result.done).toBe(500);
    expect(progress.length).toBeGreaterThanOrEqual(5);
    expect(await dumpSnapshots(setup.keyPrefix, ['_rev', '_rebuild', '_inc'])).toEqual(
      stripFields(live, ['_rev', '_rebuild', '_inc']),
    );
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
  return Object.fromEntries(
    Object.entries(dump).map(([k, h]) => [
      k,
      Object.fromEntries(Object.entries(h).filter(([f]) => !without.includes(f))),
    ]),
  );
}

describe('regressions: replay deletes only snapshot hashes and counts what it steps over', () => {
  /** A stream with 'place' (changes a snapshot) and 'note' (valid, changes nothing), and a snapshot store on a `p_<unique>_` prefix. */
  async function ordersSetup() {
    const stream = unique('orders_log');
    const keyPrefix = `p_${unique('r')}_`;
    const catalog = new EventCatalog({
      [stream]: { schemas: { place: z.object({ id: z.string() }), note: z.object({ id: z.string() }) } },
    });
    const handlers = new HandlerRegistry()
      .on<{ id: string }>(stream, 'place', (event) => ({
        snapshotId: event.data.id,
        mutations: [{ op: 'create' }, { op: 'increment', counter: 'orders' }],
      }))
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
    // Every partition of the live processors goes on after the rebuilt fold.
    for (let p = 0; p < PARTITIONS; p++) expect(await snapshots.cursor(stream, p)).toBe(ids[4]);
    // The bad entry is dead-lettered once, however many passes go over it.
    expect(await ctx.redis.xlen(processorKeys.deadLetters(stream))).toBe(1);
    await replay({ redis: ctx.redis, eventStore, snapshots, handlers, pageSize: 2 });
    expect(await ctx.redis.xlen(processorKeys.deadLetters(stream))).toBe(1);
  });

  it('counts as stepped only the entries it cannot apply, not valid events without changes; applied excludes them', async () => {
    const { stream, handlers, eventStore, snapshots } = await ordersSetup();
    const progress: ReplayProgress[] = [];
    const result = await replay({
      redis: ctx.redis,
      eventStore,
      snapshots,
      handlers,
      pageSize: 2,
      onProgress: (p) => progress.push(p),
    });

    expect(result).toMatchObject({ stream, done: 5, total: 5, applied: 4, stepped: 1 });
    expect(progress.at(-1)).toEqual(result);
    expect(
      progress.filter((p) => p.phase === 'building' && p.done > 0).map((p) => [p.done, p.applied, p.stepped]),
    ).toEqual([
      [2, 2, 0],
      [4, 3, 1],
      [5, 4, 1],
    ]);
    expect(progress.map((p) => p.phase)).toEqual(
      expect.arrayContaining(['building', 'catching-up', 'switching', 'done']),
    );
  });
});

describe('DeadLetters', () => {
  it('lists and shows what a processor dead-lettered, retries it into the stream and drops it', async () => {
    const setup = isolatedProfileSetup(ctx.redis);
    const stream = setup.streams.updates;
    const badFields = [
      ['user_id', '1', 'no_type_here', 'x'],
      ['user_id', '2', 'still_no_type', 'y'],
    ];
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
