/**
 * The partition design's guarantees, on a real Redis: reading (prepare-stream.lua; a processor
 * reads only the streams it holds partitions of and applies only its partitions' entries),
 * ownership (rebalance.lua, release-partitions.lua: leases of units, one partition of one stream
 * each, and fair shares of them) and fencing (take-partition-2.lua and the epoch checked by
 * apply-batch.lua). Each test reads the state from Redis itself (leases, fencing counters, epochs,
 * cursors, totals, the readers' connections, and the source stream against each partition's
 * cursor) with the key layout and the hash written out in test/support, not through the code
 * under test.
 *
 * How each was checked to fail (each change made alone, the tests run, the change reverted):
 * - reading: prepare-stream.lua's count check removed fails "RS_PARTITIONS_MISMATCH"; the two
 *   processors' test fails if either applies entries of a partition it does not hold (its stats),
 *   or applies an entry twice or out of order (counter, ordered set); the GAP test fails when the
 *   processor does not read again from the stored cursor after RS_PARTITION_GAP (the lost entry
 *   stays unapplied); the three-streams test fails when a processor's units are not consecutive
 *   in rebalance order (a processor over its share giving back the last partitions of every
 *   stream rather than its last units, as when a lease covered a partition of every stream: both
 *   then read all three streams), and when a processor reads a stream it holds no unit of (an
 *   XREAD of it while it holds none).
 * - ownership: rebalance.lua taking units leased to other members as if free fails all three
 *   ownership tests; a new fencing token at every renewal (INCR + SET instead of PEXPIRE) fails
 *   "only moved units change hands"; stop() not calling handOver() fails the handover test;
 *   renewals made with PERSIST instead of PEXPIRE (leases that never run out) fail "replaced once
 *   its lease runs out".
 * - fencing: apply-batch.lua's fence check removed fails the applyBatch test and the running-processor
 *   test (the stale holder writes the snapshot); take-partition-2.lua not refusing a lower token
 *   fails the take test.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { Redis } from 'ioredis';
import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { EventCatalog, RedisEventStore } from '@redsource/event-store';
import {
  DeadLetters,
  HandlerRegistry,
  processorKeys,
  StreamProcessor,
  type Logger,
  type ProcessorSettingsInput,
} from '@redsource/processor';
import { compareEntryIds, SnapshotStore } from '@redsource/snapshot-store';
import { PartitionOwnership } from '../src/partitions/ownership.ts';
import { PartitionedStreams } from '../src/partitions/streams.ts';
import { profileCatalog } from '../../../apps/profile-api/src/domain/events.ts';
import { unprocessed } from '../../../test/support/backlog.ts';
import {
  capturingLogger,
  CuttableProxy,
  designPartition,
  designPartitionOfEntry,
  expectKeyLayout,
  keys,
  holdings,
  readFences,
  readLeases,
  readUnitLeases,
  shareCounts,
  unappliedPerPartition,
  within,
  type UnitLease,
} from '../../../test/support/partitions.ts';
import { isolatedProfileSetup } from '../../../test/support/profile-setup.ts';
import { randomCommands, referenceFold, snapshotDifferences, xaddAll } from '../../../test/support/model.ts';
import { unique, useTestRedis } from '../../../test/support/redis.ts';
import { rejection } from '../../../test/support/rejection.ts';

const ctx = useTestRedis();

const SUBJECT_FIELDS = ['user_id', 'userId'];
const P = 12;
const LEASE_MS = 1_500;
const REBALANCE_MS = 100;
/** Fast ownership for these tests: a dead processor is replaced within 1.5 s. */
const OWNERSHIP = {
  partitions: P,
  leaseMs: LEASE_MS,
  rebalanceIntervalMs: REBALANCE_MS,
  blockMs: 100,
  batchSize: 50,
  gapFillAfterMs: 500,
};

type Setup = ReturnType<typeof isolatedProfileSetup>;

/** A processor of the setup's group (stopped after the test), on a client of its own unless given one. */
function processor(
  setup: Setup,
  consumer: string,
  options: ProcessorSettingsInput & { client?: Redis; logger?: Logger } = {},
): StreamProcessor {
  const { client = ctx.server.client(), logger, ...settings } = options;
  return ctx.track(
    new StreamProcessor({
      redis: client,
      eventStore: new RedisEventStore({ redis: client, catalog: profileCatalog(setup.streams) }),
      snapshots: new SnapshotStore({ redis: client, keyPrefix: setup.keyPrefix, projection: 'profiles' }),
      handlers: setup.handlers,
      group: setup.group,
      consumer,
      ...OWNERSHIP,
      ...settings,
      ...(logger ? { logger } : {}),
    }),
  );
}

/** Raw XADDs of the model's commands, a chunk every few ms, until stop() (which resolves with how many were added). */
function backgroundLoad(setup: Setup, seed: number, chunk = 10, everyMs = 10) {
  const commands = randomCommands(setup.streams, 50_000, 30, seed);
  const client = ctx.server.client();
  let running = true;
  let appended = 0;
  const done = (async () => {
    while (running && appended < commands.length) {
      const pipeline = client.pipeline();
      for (const [stream, ...fields] of commands.slice(appended, appended + chunk))
        pipeline.xadd(stream, '*', ...fields);
      for (const [error] of (await pipeline.exec()) ?? []) if (error) throw error;
      appended += chunk;
      await sleep(everyMs);
    }
  })();
  return {
    stop: async () => {
      running = false;
      await done;
      return appended;
    },
  };
}

/**
 * Waits until all `appended` entries are applied (totals over the three streams), no entry of a
 * stream is left after its partition's cursor; then expects the snapshots to equal the reference fold.
 */
async function expectAllAppliedOnce(setup: Setup, appended: number): Promise<void> {
  const streams = Object.values(setup.streams);
  const state = async () => {
    let applied = 0;
    let deadLettered = 0;
    let left = 0;
    let pending = 0;
    for (const stream of streams) {
      const totals = await setup.snapshots.totals(stream);
      applied += totals.applied;
      deadLettered += totals.deadLettered;
      const u = await unprocessed(ctx.redis, stream, setup.group, setup.snapshots, SUBJECT_FIELDS);
      left += u.unapplied;
      pending += u.pending;
    }
    return { applied, deadLettered, left, pending };
  };
  await within(
    async () => {
      const s = await state();
      return s.applied >= appended && s.left === 0;
    },
    20_000,
    50,
  );
  // A moment more: an entry applied twice would show as applied > appended.
  await sleep(200);
  expect(await state()).toEqual({ applied: appended, deadLettered: 0, left: 0, pending: 0 });
  expect(await snapshotDifferences(setup.snapshots, await referenceFold(setup.eventStore, setup.streams))).toEqual([]);
}

/** The group's XINFO GROUPS row, as an object. */
async function groupInfo(stream: string, group: string): Promise<Record<string, unknown> | undefined> {
  for (const row of (await ctx.redis.xinfo('GROUPS', stream)) as unknown[][]) {
    const info: Record<string, unknown> = {};
    for (let i = 0; i + 1 < row.length; i += 2) info[String(row[i])] = row[i + 1];
    if (info['name'] === group) return info;
  }
  return undefined;
}

/** A unit (a partition of a stream) as a map key and in messages. */
const unit = (stream: string, partition: number) => `${stream}/${partition}`;

/** The group's units: its streams (each partitioned in `partitions`), as rebalance.lua shares them out. */
interface Units {
  readonly group: string;
  readonly streams: readonly string[];
  readonly partitions: number;
}

/** The units of the setup's three streams, P partitions each unless given. */
const unitsOf = (setup: Setup, partitions = P): Units => ({
  group: setup.group,
  streams: Object.values(setup.streams),
  partitions,
});

/**
 * Samples every few ms, synchronously (one consistent view), which units each processor holds in
 * memory (what it reads and applies): a partition of a stream in two processors at once is a violation.
 */
function watchExclusive(processors: () => readonly StreamProcessor[]) {
  const violations: string[] = [];
  let samples = 0;
  const timer = setInterval(() => {
    samples++;
    const seen = new Map<string, string>();
    for (const p of processors()) {
      for (const held of p.partitions) {
        const key = unit(held.stream, held.partition);
        const other = seen.get(key);
        if (other !== undefined) violations.push(`partition ${key} held by ${other} and ${p.consumer}`);
        seen.set(key, p.consumer);
      }
    }
  }, 2);
  return {
    violations,
    samples: () => samples,
    stop: () => clearInterval(timer),
  };
}

/**
 * Samples CLIENT LIST every few ms until stop(): which of the processors' readers were seen (the
 * connection a processor opens per stream, named `redsource:<consumer>:reader:<stream>`) and which
 * were seen blocked in an XREAD of their stream; each as `<consumer> <stream>`.
 */
function watchReaders(consumers: readonly string[], streams: readonly string[]) {
  const names = new Map<string, string>(
    consumers.flatMap((c) => streams.map((s) => [`redsource:${c}:reader:${s}`, `${c} ${s}`] as const)),
  );
  const present = new Set<string>();
  const blocked = new Set<string>();
  let samples = 0;
  let running = true;
  const done = (async () => {
    while (running) {
      const list = String(await ctx.redis.client('LIST'));
      for (const line of list.split('\n')) {
        const fields = new Map(
          line
            .trim()
            .split(' ')
            .map((f) => [f.slice(0, f.indexOf('=')), f.slice(f.indexOf('=') + 1)] as const),
        );
        const reader = names.get(fields.get('name') ?? '');
        if (reader === undefined) continue;
        present.add(reader);
        if (fields.get('cmd') === 'xread' && fields.get('flags')?.includes('b')) blocked.add(reader);
      }
      samples++;
      await sleep(5);
    }
  })();
  return {
    present,
    blocked,
    samples: () => samples,
    stop: async () => {
      running = false;
      await done;
    },
  };
}

/**
 * Whether the processors hold exactly `counts` units each (all active), and Redis agrees: each
 * unit a processor holds in memory is leased to it with the same token, and every unit is held.
 */
async function converged(
  units: Units,
  processors: readonly StreamProcessor[],
  counts: readonly number[],
): Promise<boolean> {
  const leases = await readUnitLeases(ctx.redis, units.group, units.streams, units.partitions);
  const byUnit = new Map(leases.flatMap((l) => (l ? [[unit(l.stream, l.partition), l] as const] : [])));
  const held = processors.map((p) => p.partitions);
  if (held.some((h, i) => h.length !== counts[i] || h.some((x) => x.state !== 'active'))) return false;
  if (leases.some((l) => l === undefined)) return false;
  return held.every((h, i) =>
    h.every((x) => {
      const lease = byUnit.get(unit(x.stream, x.partition));
      return lease !== undefined && lease.holder === processors[i]?.consumer && lease.token === x.token;
    }),
  );
}

async function converge(
  units: Units,
  processors: readonly StreamProcessor[],
  counts: readonly number[],
  timeoutMs = 5_000,
): Promise<void> {
  const done = await within(() => converged(units, processors, counts), timeoutMs);
  const leases = await readUnitLeases(ctx.redis, units.group, units.streams, units.partitions);
  expect(
    done.ok,
    `want ${JSON.stringify(counts)}; in memory ${JSON.stringify(processors.map((p) => p.partitions))}; leases ${JSON.stringify(leases)}`,
  ).toBe(true);
}

describe("reading: a processor reads the streams it holds partitions of and applies only its partitions' entries", () => {
  it('the processor and this file name the same keys', () => {
    expectKeyLayout();
  });

  it('prepare-stream.lua fixes the partition count (RS_PARTITIONS_MISMATCH), creates the group where the projection starts, and gives every partition a cursor there', async () => {
    const group = unique('g');
    const streams = (count = P) => new PartitionedStreams(ctx.redis, group, count);
    const cursorKey = (stream: string) => (p: number) => `redsource:{${stream}}:applied:profiles:p${p}`;
    const oldKey = (stream: string) => `redsource:{${stream}}:applied:profiles`;
    const cursors = async (stream: string) =>
      ctx.redis.mget(...Array.from({ length: P }, (_, p) => cursorKey(stream)(p)));

    // A new group at '$': the projection starts after the entries already there.
    const late = unique('late');
    await ctx.redis.xadd(late, '*', 'user_id', '1');
    const last = String(await ctx.redis.xadd(late, '*', 'user_id', '2'));
    expect(await streams().prepare(late, '$', oldKey(late), cursorKey(late))).toEqual({ adopted: undefined });
    expect(await ctx.redis.get(keys.count(late, group))).toBe(String(P));
    expect(await cursors(late)).toEqual(Array.from({ length: P }, () => last));
    expect(await groupInfo(late, group)).toMatchObject({ 'last-delivered-id': last, pending: 0 });
    // Another count is refused and changes nothing; the same count again changes nothing either.
    for (const other of [8, 13, 1])
      expect(String(await rejection(streams(other).prepare(late, '0', oldKey(late), cursorKey(late))))).toMatch(
        /RS_PARTITIONS_MISMATCH.*12.*not/,
      );
    await ctx.redis.set(cursorKey(late)(4), '9999999999999-0');
    expect(await streams().prepare(late, '0', oldKey(late), cursorKey(late))).toEqual({ adopted: undefined });
    expect(await ctx.redis.get(keys.count(late, group))).toBe(String(P));
    expect((await cursors(late))[4]).toBe('9999999999999-0');
    expect((await cursors(late))[5]).toBe(last);

    // A stream that does not exist yet, from the beginning: created empty, every cursor at 0-0.
    const fresh = unique('fresh');
    await streams().prepare(fresh, '0', oldKey(fresh), cursorKey(fresh));
    expect(await ctx.redis.xlen(fresh)).toBe(0);
    expect(await cursors(fresh)).toEqual(Array.from({ length: P }, () => '0-0'));

    // A group someone created before (no cursors yet): nothing of it is applied, every cursor starts at 0-0.
    const existing = unique('existing');
    await ctx.redis.xadd(existing, '*', 'user_id', '1');
    await ctx.redis.xgroup('CREATE', existing, group, '$');
    await streams().prepare(existing, '$', oldKey(existing), cursorKey(existing));
    expect(await cursors(existing)).toEqual(Array.from({ length: P }, () => '0-0'));
  });

  it("two processors of one group on one stream apply every entry exactly once, each only its own partitions' entries, in each subject's order", async () => {
    const stream = unique('seq');
    const group = unique('g');
    const keyPrefix = `${unique('seq')}_`;
    const catalog = new EventCatalog({
      [stream]: { schemas: { step: z.object({ user: z.string(), seq: z.coerce.number() }) }, subjectFields: ['user'] },
    });
    // Each user's entries carry 0, 1, 2...: the ordered set shows the order they were applied in, the counter how often.
    const handlers = new HandlerRegistry().on<{ user: string; seq: number }>(stream, 'step', ({ data }) => ({
      snapshotId: data.user,
      mutations: [
        { op: 'create' },
        { op: 'addMember', set: 'seq', member: String(data.seq) },
        { op: 'increment', counter: 'n' },
      ],
    }));
    const applying = new Map<string, Set<number>>();
    const start = async (consumer: string) => {
      const client = ctx.server.client();
      const p = ctx.track(
        new StreamProcessor({
          redis: client,
          eventStore: new RedisEventStore({ redis: client, catalog }),
          snapshots: new SnapshotStore({ redis: client, keyPrefix }),
          handlers,
          group,
          consumer,
          ...OWNERSHIP,
        }),
      );
      await p.start();
      return p;
    };
    const [a, b] = [await start('a'), await start('b')];
    await converge({ group, streams: [stream], partitions: P }, [a, b], [6, 6]);
    for (const p of [a, b]) applying.set(p.consumer, new Set(p.partitions.map((h) => h.partition)));
    const users = Array.from({ length: 30 }, (_, i) => `u${i}`);
    const next = new Map(users.map((u) => [u, 0]));
    for (let chunk = 0; chunk < 30; chunk++) {
      const pipeline = ctx.redis.pipeline();
      for (let j = 0; j < 50; j++) {
        const user = users[(chunk * 7 + j * 13) % users.length] as string;
        const seq = next.get(user) as number;
        next.set(user, seq + 1);
        pipeline.xadd(stream, '*', 'command', 'step', 'user', user, 'seq', String(seq));
      }
      for (const [error] of (await pipeline.exec()) ?? []) if (error) throw error;
      await sleep(5);
    }
    const snapshots = new SnapshotStore({ redis: ctx.redis, keyPrefix });
    const done = await within(async () => (await snapshots.totals(stream)).applied >= 1_500, 20_000, 50);
    expect(done.ok).toBe(true);
    await sleep(300);
    expect(await snapshots.totals(stream)).toEqual({ applied: 1_500, skipped: 0, deadLettered: 0 });
    for (const user of users) {
      const snapshot = await snapshots.read(user);
      const count = next.get(user) as number;
      expect({ user, n: snapshot?.counters['n'], seq: snapshot?.sets['seq'] }).toEqual({
        user,
        n: count,
        seq: Array.from({ length: count }, (_, i) => String(i)),
      });
    }
    expect(await unappliedPerPartition(ctx.redis, snapshots, stream, P, ['user'])).toEqual(
      Array.from({ length: P }, () => 0),
    );
    // Both read the whole stream (both hold partitions of it), each applied only the entries of the partitions it held
    // (no partition moved meanwhile).
    for (const p of [a, b]) {
      const mine = applying.get(p.consumer) as Set<number>;
      expect(new Set(p.partitions.map((h) => h.partition))).toEqual(mine);
      const expected = users
        .filter((u) => mine.has(designPartition(u, P)))
        .reduce((n, u) => n + (next.get(u) as number), 0);
      expect(p.stats()[stream]?.applied, p.consumer).toBe(expected);
    }
    expect((a.stats()[stream]?.applied ?? 0) + (b.stats()[stream]?.applied ?? 0)).toBe(1_500);
  });

  it('two processors of one group on three streams of 4 partitions (12 units) hold 6 consecutive units each: 4 stream-reads between them, not 6, and each entry is applied once, by the holder of its unit', async () => {
    const setup = isolatedProfileSetup(ctx.redis);
    const units = unitsOf(setup, 4);
    // The units' order in rebalance.lua: the streams by name, each stream's partitions 0..3.
    const ordered = [...units.streams].sort();
    const [a, b] = ['a', 'b'].map((name) => processor(setup, name, { partitions: 4 })) as [
      StreamProcessor,
      StreamProcessor,
    ];
    const batches: { consumer: string; stream: string; partition: number; count: number }[] = [];
    for (const p of [a, b])
      p.on('batch', (e) =>
        batches.push({ consumer: p.consumer, stream: e.stream, partition: e.partition, count: e.count }),
      );
    await Promise.all([a.start(), b.start()]);
    await converge(units, [a, b], [6, 6]);

    // Each holds 6 consecutive units: one holds units 0-5, the other 6-11 (whichever joined first
    // kept the first ones).
    const leases = await readUnitLeases(ctx.redis, setup.group, units.streams, 4);
    const byHolder = holdings(leases);
    expect([...byHolder.keys()].sort()).toEqual(['a', 'b']);
    expect([...byHolder.values()].sort((x, y) => (x[0] as number) - (y[0] as number))).toEqual([
      [0, 1, 2, 3, 4, 5],
      [6, 7, 8, 9, 10, 11],
    ]);
    // So the first and the last stream are each held wholly by one processor, not the same one, and
    // only the middle one is split: 2 streams each, 4 stream-reads in all (S + N - 1).
    const streamsHeld = (p: StreamProcessor) => [...new Set(p.partitions.map((h) => h.stream))];
    const holdersOf = (stream: string) =>
      [a, b].flatMap((p) => {
        const mine = p.partitions.filter((h) => h.stream === stream).map((h) => h.partition);
        return mine.length > 0 ? [{ consumer: p.consumer, partitions: mine }] : [];
      });
    const [first, middle, last] = ordered as [string, string, string];
    for (const stream of [first, last]) expect(holdersOf(stream).map((h) => h.partitions)).toEqual([[0, 1, 2, 3]]);
    expect(holdersOf(first)[0]?.consumer).not.toBe(holdersOf(last)[0]?.consumer);
    expect(
      holdersOf(middle)
        .map((h) => h.partitions)
        .sort((x, y) => (x[0] as number) - (y[0] as number)),
    ).toEqual([
      [0, 1],
      [2, 3],
    ]);
    expect([a, b].map((p) => streamsHeld(p).length)).toEqual([2, 2]);
    const heldBefore = [a, b].map((p) => p.partitions);

    // Reading: a processor's reader of a stream (a connection each, named after it) blocks in XREAD
    // only if the processor holds units of that stream; the reader of the other stream never reads.
    const readers = watchReaders(['a', 'b'], units.streams);
    const reading = new Set([a, b].flatMap((p) => streamsHeld(p).map((s) => `${p.consumer} ${s}`)));
    const idle = await within(() => [...reading].every((r) => readers.blocked.has(r)), 5_000);
    expect(idle.ok, JSON.stringify([...readers.blocked])).toBe(true);

    // Entries of every stream, in chunks, while both run: each applied once, by the holder of its unit.
    const commands = randomCommands(setup.streams, 900, 30, 44);
    for (let i = 0; i < commands.length; i += 30) {
      await xaddAll(ctx.redis, commands.slice(i, i + 30));
      await sleep(5);
    }
    try {
      await expectAllAppliedOnce(setup, commands.length);
    } finally {
      await readers.stop();
    }
    expect(readers.samples()).toBeGreaterThan(10);
    expect([...readers.present].sort(), 'every reader connection seen').toEqual(
      ['a', 'b'].flatMap((c) => units.streams.map((s) => `${c} ${s}`)).sort(),
    );
    expect([...readers.blocked].sort()).toEqual([...reading].sort());
    // Nothing moved meanwhile; every batch was of a unit its processor held, and each processor
    // applied exactly the entries of its units (none at all of the stream it does not hold).
    expect([a, b].map((p) => p.partitions)).toEqual(heldBefore);
    const holds = (consumer: string, stream: string, partition: number) =>
      holdersOf(stream).some((h) => h.consumer === consumer && h.partitions.includes(partition));
    expect(batches.filter((e) => !holds(e.consumer, e.stream, e.partition))).toEqual([]);
    expect(batches.reduce((n, e) => n + e.count, 0)).toBe(commands.length);
    for (const stream of ordered) {
      const entries = (await ctx.redis.xrange(stream, '-', '+')).map(([, fields]) =>
        designPartitionOfEntry(fields, SUBJECT_FIELDS, 4),
      );
      expect(entries.length, stream).toBeGreaterThan(0);
      for (const p of [a, b]) {
        const expected = entries.filter((partition) => holds(p.consumer, stream, partition)).length;
        expect(p.stats()[stream]?.applied, `${p.consumer} on ${stream}`).toBe(expected);
      }
    }
  });

  it("an entry of more than 7000 field items is applied in its user's order like any other, and one the codec refuses is dead-lettered with its exact bytes", async () => {
    const setup = isolatedProfileSetup(ctx.redis);
    const user = 'big';
    const personal = Array.from({ length: 3_597 }, (_, i) => [`f${i}`, `v${i}`]).flat();
    const big = ['user_id', user, 'command', 'update', 'name', 'Big', ...personal];
    expect(big.length).toBe(7_200);
    // The same size with no command: the event store cannot decode it.
    const poison = ['user_id', user, 'no_command_here', 'x', ...personal, 'pad', 'pad'];
    expect(poison.length).toBe(7_200);
    await ctx.redis.xadd(
      setup.streams.updates,
      '*',
      'user_id',
      user,
      'command',
      'register',
      'name',
      'Small',
      'f0',
      'before',
    );
    await ctx.redis.xadd(setup.streams.updates, '*', ...big);
    const poisonId = String(await ctx.redis.xadd(setup.streams.updates, '*', ...poison));
    await ctx.redis.xadd(setup.streams.updates, '*', 'user_id', user, 'action', 'update', 'f1', 'after');

    const p = processor(setup, 'solo');
    await p.start();
    const done = await within(
      async () => {
        const t = await setup.snapshots.totals(setup.streams.updates);
        return t.applied + t.deadLettered >= 4;
      },
      10_000,
      50,
    );
    expect(done.ok).toBe(true);
    expect(await setup.snapshots.totals(setup.streams.updates)).toEqual({ applied: 3, skipped: 0, deadLettered: 1 });
    const snapshot = await setup.snapshots.read(user);
    expect(snapshot?.fields['name']).toBe('Big');
    expect(snapshot?.fields['f0']).toBe('v0');
    expect(snapshot?.fields['f1']).toBe('after');
    expect(snapshot?.fields['f3596']).toBe('v3596');
    expect(Object.keys(snapshot?.fields ?? {})).toHaveLength(3_598);
    const [letter] = await new DeadLetters(ctx.redis).list(setup.streams.updates);
    expect(letter?.entryId).toBe(poisonId);
    expect(letter?.reason).toMatch(/RS_ENTRY_UNDECODABLE/);
    expect(letter?.bytes.map((b) => b.toString())).toEqual(poison);
  });

  it('a partition whose cursor went back under its holder (RS_PARTITION_GAP: a failover lost its last apply) is read again from the stored cursor: nothing lost', async () => {
    const setup = isolatedProfileSetup(ctx.redis);
    const log = capturingLogger();
    const a = processor(setup, 'a', { logger: log });
    await a.start();
    // Alone, it holds every partition of the three streams.
    expect((await within(() => a.partitions.length === 3 * P, 5_000)).ok).toBe(true);
    const stream = setup.streams.activity;
    const user = '1';
    const partition = designPartition(user, P);
    const kick = () => ctx.redis.xadd(stream, '*', 'user_id', user, 'command', 'kick', 'object', 'x');
    await kick();
    expect((await within(async () => (await setup.snapshots.read(user))?.counters['kick'] === 1, 5_000)).ok).toBe(true);
    // The apply is lost (as with a failover to a replica that had not received it): snapshot and cursor as before it.
    await ctx.redis.del(setup.snapshots.key(user));
    await ctx.redis.set(setup.snapshots.cursorKey(stream, partition), '0-0');
    // The holder reads on from where it believes the partition is applied: its next apply is refused, and it reads again.
    await kick();
    const refused = await within(() => log.said(/partition cursor moved under this processor/), 5_000);
    expect(refused.ok, JSON.stringify(log.lines.slice(-5))).toBe(true);
    expect((await within(async () => (await setup.snapshots.read(user))?.counters['kick'] === 2, 5_000)).ok).toBe(true);
    await sleep(300);
    expect((await setup.snapshots.read(user))?.counters['kick']).toBe(2);
    expect(a.partitions.map((h) => unit(h.stream, h.partition))).toContain(unit(stream, partition));
  });
});

describe('ownership: each partition of a stream held by one processor at a time, shared fairly and cooperatively', () => {
  it('36 units (3 streams × 12 partitions) go 36 → 18+18 → 12+12+12 as processors join; only moved units change hands, the rest keep their token', async () => {
    const setup = isolatedProfileSetup(ctx.redis);
    const units = unitsOf(setup);
    const load = backgroundLoad(setup, 41);
    const all: StreamProcessor[] = [];
    const exclusive = watchExclusive(() => all);
    try {
      const a = processor(setup, 'a');
      all.push(a);
      await a.start();
      await converge(units, [a], [36]);
      await sleep(300);
      const alone = await readUnitLeases(ctx.redis, setup.group, units.streams, P);
      const fencesAlone = await readFences(ctx.redis, setup.group, P);
      expect(alone.every((l) => l?.holder === 'a')).toBe(true);

      const b = processor(setup, 'b');
      all.push(b);
      await b.start();
      await converge(units, [a, b], [18, 18]);
      await sleep(300);
      const pair = await readUnitLeases(ctx.redis, setup.group, units.streams, P);
      const fencesPair = await readFences(ctx.redis, setup.group, P);
      expectOnlyMovedChanged(alone, pair, fencesAlone, fencesPair, 'b', 18);
      expect(a.share).toEqual({ share: 18, members: 2 });

      const c = processor(setup, 'c');
      all.push(c);
      await c.start();
      await converge(units, [a, b, c], [12, 12, 12]);
      await sleep(300);
      const three = await readUnitLeases(ctx.redis, setup.group, units.streams, P);
      const fencesThree = await readFences(ctx.redis, setup.group, P);
      expectOnlyMovedChanged(pair, three, fencesPair, fencesThree, 'c', 12);
      expect([a.share, b.share, c.share]).toEqual([
        { share: 12, members: 3 },
        { share: 12, members: 3 },
        { share: 12, members: 3 },
      ]);
      // Each stream's epoch of each partition is the token of that stream's partition's lease (what every apply is checked against).
      for (const stream of units.streams) {
        const epochs = await ctx.redis.mget(...Array.from({ length: P }, (_, p) => keys.epoch(stream, setup.group, p)));
        expect(epochs).toEqual((await readLeases(ctx.redis, setup.group, stream, P)).map((l) => l?.token));
        expect(epochs).toEqual(three.filter((l) => l?.stream === stream).map((l) => l?.token));
      }

      await expectAllAppliedOnce(setup, await load.stop());
    } finally {
      await load.stop();
      exclusive.stop();
    }
    expect(exclusive.samples()).toBeGreaterThan(100);
    expect(exclusive.violations).toEqual([]);
  });

  it('stop() hands its units over at once: the others hold them within ~3 rebalance intervals, far before the lease', async () => {
    const setup = isolatedProfileSetup(ctx.redis);
    const units = unitsOf(setup);
    const load = backgroundLoad(setup, 42);
    const [a, b, c] = ['a', 'b', 'c'].map((name) => processor(setup, name)) as [
      StreamProcessor,
      StreamProcessor,
      StreamProcessor,
    ];
    const exclusive = watchExclusive(() => [a, b, c]);
    try {
      await Promise.all([a.start(), b.start(), c.start()]);
      await converge(units, [a, b, c], [12, 12, 12]);
      const before = await readFences(ctx.redis, setup.group, P);
      const cHeld = c.partitions.map((h) => ({ stream: h.stream, partition: h.partition }));
      await c.stop();
      // Given back and gone from the members, as stop() resolves.
      const leases = await readUnitLeases(ctx.redis, setup.group, units.streams, P);
      expect(leases.filter((l) => l?.holder === 'c')).toEqual([]);
      expect(await ctx.redis.zscore(keys.members(setup.group), 'c')).toBeNull();
      const taken = await within(() => converged(units, [a, b], [18, 18]), 5_000);
      expect(taken.ok).toBe(true);
      expect(taken.ms, `handover took ${Math.round(taken.ms)} ms`).toBeLessThan(3 * REBALANCE_MS + 200);
      // Only c's units moved, once each: a partition's fencing counter grew by the number of c's units of that partition.
      const after = await readFences(ctx.redis, setup.group, P);
      expect(after.map((f, p) => f - (before[p] as number))).toEqual(
        Array.from({ length: P }, (_, p) => cHeld.filter((h) => h.partition === p).length),
      );
      await expectAllAppliedOnce(setup, await load.stop());
    } finally {
      await load.stop();
      exclusive.stop();
    }
    expect(exclusive.violations).toEqual([]);
  });

  it('a processor that just disappears (its connections cut, no stop()) is replaced once its lease runs out, not before; it then finds its units gone', async () => {
    const setup = isolatedProfileSetup(ctx.redis);
    const units = unitsOf(setup);
    const proxy = await CuttableProxy.start(ctx.server.url);
    const client = new Redis(proxy.url, { maxRetriesPerRequest: 3, retryStrategy: (n) => Math.min(50 * n, 500) });
    client.on('error', () => undefined);
    const log = capturingLogger();
    const load = backgroundLoad(setup, 43);
    const d = processor(setup, 'd', { client, logger: log, shutdownTimeoutMs: 500 });
    try {
      const a = processor(setup, 'a');
      const b = processor(setup, 'b');
      await Promise.all([a.start(), b.start(), d.start()]);
      await converge(units, [a, b, d], [12, 12, 12]);
      // A few rounds of renewals first: the leases it holds now are renewed ones, not just taken.
      await sleep(3 * REBALANCE_MS);
      const dHeld = d.partitions.map((h) => unit(h.stream, h.partition));
      const before = await readUnitLeases(ctx.redis, setup.group, units.streams, P);

      proxy.cut();
      const replaced = await within(() => converged(units, [a, b], [18, 18]), LEASE_MS + 3_000);
      expect(replaced.ok).toBe(true);
      // Its last renewal was at most one round before the cut: the leases ran out no sooner than that.
      expect(replaced.ms, `replaced after ${Math.round(replaced.ms)} ms`).toBeGreaterThan(
        LEASE_MS - REBALANCE_MS - 150,
      );
      expect(replaced.ms, `replaced after ${Math.round(replaced.ms)} ms`).toBeLessThan(
        LEASE_MS + 3 * REBALANCE_MS + 500,
      );
      const after = await readUnitLeases(ctx.redis, setup.group, units.streams, P);
      expect(before.filter((l) => l && dHeld.includes(unit(l.stream, l.partition)))).toHaveLength(12);
      for (const [u, lease] of before.entries()) {
        if (lease && dHeld.includes(unit(lease.stream, lease.partition)))
          expect(Number(after[u]?.token)).toBeGreaterThan(Number(lease.token));
        else expect(after[u]).toEqual(lease);
      }
      // Cut off, it still believes it holds them: only fencing keeps it from applying (see below).
      expect(d.partitions.map((h) => unit(h.stream, h.partition))).toEqual(dHeld);

      proxy.restore();
      const noticed = await within(() => log.said(/partition lease lost|claimed by another processor/), 5_000);
      expect(noticed.ok, JSON.stringify(log.lines.slice(-10))).toBe(true);
      // Back, it rejoins and gets a fair share again, with new tokens.
      await converge(units, [a, b, d], [12, 12, 12], 8_000);
      await expectAllAppliedOnce(setup, await load.stop());
    } finally {
      await load.stop();
      proxy.restore();
      // Stopped here rather than after the test: its client goes with the proxy.
      await d.stop();
    }
    client.disconnect();
    await proxy.close();
  });
});

describe('fencing: a holder whose partition was claimed by a later token writes nothing', () => {
  it('take-partition-2.lua: a lower token than the epoch is refused with RS_PARTITION_LOST; an equal or higher one claims and reads the cursor', async () => {
    const stream = unique('fence');
    const group = unique('g');
    const ownership = new PartitionOwnership(ctx.redis, group, 'me', P, 10_000);
    const epoch = keys.epoch(stream, group, 3);
    const cursor = `redsource:{${stream}}:applied:profiles:p3`;
    expect(await ownership.take(epoch, cursor, '5')).toBe('0-0');
    expect(String(await rejection(ownership.take(epoch, cursor, '4')))).toMatch(/RS_PARTITION_LOST/);
    expect(await ctx.redis.get(epoch)).toBe('5');
    await ctx.redis.set(cursor, '1700000000000-3');
    expect(await ownership.take(epoch, cursor, '5')).toBe('1700000000000-3');
    expect(await ownership.take(epoch, cursor, '6')).toBe('1700000000000-3');
    expect(String(await rejection(ownership.take(epoch, cursor, '5')))).toMatch(/RS_PARTITION_LOST/);
    expect(await ctx.redis.get(epoch)).toBe('6');
  });

  it('SnapshotStore.applyBatch with a stale fence fails RS_PARTITION_LOST and writes nothing; the current token applies', async () => {
    const stream = unique('fence');
    const group = unique('g');
    const partition = 5;
    const snapshots = new SnapshotStore({ redis: ctx.redis, keyPrefix: `${unique('snap')}_`, projection: 'profiles' });
    const ids: string[] = [];
    for (const fields of [
      ['user_id', 'u1', 'n', '1'],
      ['garbage', 'x'],
      ['user_id', 'u1', 'n', '2'],
    ])
      ids.push(String(await ctx.redis.xadd(stream, '*', ...fields)));
    const epoch = keys.epoch(stream, group, partition);
    const batch = (token: string) =>
      snapshots.applyBatch({
        stream,
        entries: [
          {
            entryId: ids[0] as string,
            changes: [{ snapshotId: 'u1', mutations: [{ op: 'create' }, { op: 'increment', counter: 'n' }] }],
          },
          { entryId: ids[1] as string, deadLetter: { reason: 'RS_TEST poison', fields: ['garbage', 'x'] } },
          {
            entryId: ids[2] as string,
            changes: [{ snapshotId: 'u1', mutations: [{ op: 'increment', counter: 'n' }] }],
          },
        ],
        deadLetterStream: processorKeys.deadLetters(stream),
        group,
        partition: { index: partition, readFrom: '0-0', readThrough: ids[2] as string },
        fence: { key: epoch, token, code: 'RS_PARTITION_LOST' },
      });
    const untouched = async () => {
      expect(await ctx.redis.exists(snapshots.key('u1'))).toBe(0);
      expect(await snapshots.cursor(stream, partition)).toBe('0-0');
      expect(await snapshots.totals(stream)).toEqual({ applied: 0, skipped: 0, deadLettered: 0 });
      expect(await ctx.redis.xlen(processorKeys.deadLetters(stream))).toBe(0);
      expect(await ctx.redis.scard(`redsource:{${stream}}:dead-lettered-ids`)).toBe(0);
    };
    // Nobody claimed the partition: no token is current.
    expect(String(await rejection(batch('1')))).toMatch(/RS_PARTITION_LOST/);
    await untouched();
    // Token 2 claimed it after token 1: 1 is stale.
    await ctx.redis.set(epoch, '2');
    expect(String(await rejection(batch('1')))).toMatch(/RS_PARTITION_LOST/);
    expect(String(await rejection(batch('3')))).toMatch(/RS_PARTITION_LOST/);
    await untouched();
    const result = await batch('2');
    expect({ applied: result.applied, deadLettered: result.deadLettered, cursor: result.cursor }).toEqual({
      applied: 2,
      deadLettered: 1,
      cursor: ids[2],
    });
    expect((await snapshots.read('u1'))?.counters['n']).toBe(2);
    // The source stream is left as it is.
    expect(await ctx.redis.xlen(stream)).toBe(3);
  });

  it('a running processor whose partition of a stream is claimed by a later token refuses its own apply, drops that unit only, and the next holder applies the entry once', async () => {
    const setup = isolatedProfileSetup(ctx.redis);
    const log = capturingLogger();
    // Rounds 20 s apart: it cannot learn of the successor from its lease, only from the fenced apply.
    const a = processor(setup, 'a', { leaseMs: 60_000, rebalanceIntervalMs: 20_000, logger: log });
    await a.start();
    expect((await within(() => a.partitions.length === 3 * P, 5_000)).ok).toBe(true);
    const user = '1';
    const partition = designPartition(user, P);
    const stream = setup.streams.activity;
    const tokenOf = (s: string) => a.partitions.find((h) => h.stream === s && h.partition === partition)?.token;
    const stale = tokenOf(stream) as string;
    const others = [setup.streams.updates, setup.streams.friends];
    const kept = others.map(tokenOf);
    // A successor claims the activity stream's partition as rebalance.lua and take-partition-2.lua
    // would: next fencing token of the partition, the lease of that stream's partition, its epoch.
    const successor = await ctx.redis.incr(keys.fence(setup.group, partition));
    expect(successor).toBeGreaterThan(Number(stale));
    await ctx.redis.set(keys.lease(setup.group, stream, partition), `${successor} ghost`, 'PX', 60_000);
    const ownership = new PartitionOwnership(ctx.redis, setup.group, 'ghost', P, 60_000);
    await ownership.take(
      keys.epoch(stream, setup.group, partition),
      setup.snapshots.cursorKey(stream, partition),
      String(successor),
    );

    const id = await ctx.redis.xadd(stream, '*', 'user_id', user, 'command', 'kick', 'object', 'x');
    const refused = await within(() => log.said(/claimed by another processor/), 5_000);
    expect(refused.ok, JSON.stringify(log.lines.slice(-5))).toBe(true);
    expect(await setup.snapshots.read(user)).toBeUndefined();
    expect(await setup.snapshots.cursor(stream, partition)).toBe('0-0');
    expect(await setup.snapshots.totals(stream)).toEqual({ applied: 0, skipped: 0, deadLettered: 0 });
    expect(a.partitions.map((h) => unit(h.stream, h.partition))).not.toContain(unit(stream, partition));
    // The same partition of the other streams is another unit: still its own, with the same tokens.
    expect(a.partitions).toHaveLength(3 * P - 1);
    expect(others.map(tokenOf)).toEqual(kept);
    // The entry waits in the stream for the partition's holder: the only one after its partition's cursor.
    const left = await unappliedPerPartition(ctx.redis, setup.snapshots, stream, P, SUBJECT_FIELDS);
    expect(left).toEqual(Array.from({ length: P }, (_, p) => (p === partition ? 1 : 0)));
    expect(compareEntryIds(await setup.snapshots.cursor(stream, partition), String(id))).toBeLessThan(0);

    // The ghost goes; a real processor takes the partition over and applies the entry, once.
    await a.stop();
    await ctx.redis.del(keys.lease(setup.group, stream, partition));
    const b = processor(setup, 'b');
    await b.start();
    await expectAllAppliedOnce(setup, 1);
    expect((await setup.snapshots.read(user))?.counters['kick']).toBe(1);
    expect(Number(b.partitions.find((h) => h.stream === stream && h.partition === partition)?.token)).toBeGreaterThan(
      successor,
    );
  });
});

/**
 * Between two readings of the units' leases (readUnitLeases): exactly `moved` units changed holder,
 * all to `newcomer`, each with one new fencing token of its partition (no unit bounced: the new
 * tokens of a partition's moved units are exactly what its counter grew by); every other unit kept
 * its holder and its token.
 */
function expectOnlyMovedChanged(
  before: readonly (UnitLease | undefined)[],
  after: readonly (UnitLease | undefined)[],
  fencesBefore: readonly number[],
  fencesAfter: readonly number[],
  newcomer: string,
  moved: number,
): void {
  const changed = before.flatMap((l, u) => (l?.holder === after[u]?.holder ? [] : [u]));
  expect(changed).toHaveLength(moved);
  const newTokens = fencesBefore.map(() => [] as number[]);
  for (let u = 0; u < before.length; u++) {
    if (changed.includes(u)) {
      const lease = after[u] as UnitLease;
      expect(lease.holder).toBe(newcomer);
      newTokens[lease.partition]?.push(Number(lease.token));
    } else {
      expect(after[u]).toEqual(before[u]);
    }
  }
  for (const [p, tokens] of newTokens.entries()) {
    const from = fencesBefore[p] as number;
    expect(
      tokens.sort((x, y) => x - y),
      `partition ${p}`,
    ).toEqual(Array.from({ length: (fencesAfter[p] as number) - from }, (_, i) => from + 1 + i));
  }
  // Fair: every holder has the same number.
  expect(new Set(shareCounts(after)).size).toBe(1);
}
