/**
 * The partition design's guarantees, on a real Redis: reading (prepare-stream.lua; every processor
 * reads the source stream and applies only its partitions' entries), ownership (rebalance.lua,
 * release-partitions.lua: leases and fair shares) and fencing (take-partition-2.lua and the epoch
 * checked by apply-batch.lua). Each test reads the state from Redis itself (leases, fencing
 * counters, epochs, cursors, totals, and the source stream against each partition's cursor) with
 * the key layout and the hash written out in test/support, not through the code under test.
 *
 * How each was checked to fail (each change made alone, the tests run, the change reverted):
 * - reading: prepare-stream.lua's count check removed fails "RS_PARTITIONS_MISMATCH"; the two
 *   processors' test fails if either applies entries of a partition it does not hold (its stats),
 *   or applies an entry twice or out of order (counter, ordered set); the GAP test fails when the
 *   processor does not read again from the stored cursor after RS_PARTITION_GAP (the lost entry
 *   stays unapplied).
 * - ownership: rebalance.lua taking partitions leased to other members as if free fails all three
 *   ownership tests (the exclusivity sampler saw 114 double holdings); a new fencing token at every
 *   renewal (INCR + SET instead of PEXPIRE) fails "only moved partitions change hands"; stop() not
 *   calling handOver() fails the handover test; renewals made with PERSIST instead of PEXPIRE (leases
 *   that never run out) fail "replaced once its lease runs out".
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
  expectKeyLayout,
  keys,
  readFences,
  readLeases,
  shareCounts,
  unappliedPerPartition,
  within,
  type Lease,
} from '../../../test/support/partitions.ts';
import { isolatedProfileSetup } from '../../../test/support/profile-setup.ts';
import { randomCommands, referenceFold, snapshotDifferences } from '../../../test/support/model.ts';
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

/**
 * Samples every few ms, synchronously (one consistent view), which partitions each processor holds
 * in memory (what it reads and applies): a partition in two processors at once is a violation.
 */
function watchExclusive(processors: () => readonly StreamProcessor[]) {
  const violations: string[] = [];
  let samples = 0;
  const timer = setInterval(() => {
    samples++;
    const seen = new Map<number, string>();
    for (const p of processors()) {
      for (const held of p.partitions) {
        const other = seen.get(held.partition);
        if (other !== undefined) violations.push(`partition ${held.partition} held by ${other} and ${p.consumer}`);
        seen.set(held.partition, p.consumer);
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
 * Whether the processors hold exactly `counts` partitions each (all active), and Redis agrees: each
 * lease names the processor holding it in memory, with the same token, and every partition is held.
 */
async function converged(
  setup: Pick<Setup, 'group'>,
  processors: readonly StreamProcessor[],
  counts: readonly number[],
): Promise<boolean> {
  const leases = await readLeases(ctx.redis, setup.group, P);
  const held = processors.map((p) => p.partitions);
  if (held.some((h, i) => h.length !== counts[i] || h.some((x) => x.state !== 'active'))) return false;
  if (leases.some((l) => l === undefined)) return false;
  return held.every((h, i) =>
    h.every((x) => leases[x.partition]?.holder === processors[i]?.consumer && leases[x.partition]?.token === x.token),
  );
}

async function converge(
  setup: Pick<Setup, 'group'>,
  processors: readonly StreamProcessor[],
  counts: readonly number[],
  timeoutMs = 5_000,
): Promise<void> {
  const done = await within(() => converged(setup, processors, counts), timeoutMs);
  const leases = await readLeases(ctx.redis, setup.group, P);
  expect(
    done.ok,
    `want ${JSON.stringify(counts)}; in memory ${JSON.stringify(processors.map((p) => p.partitions))}; leases ${JSON.stringify(leases)}`,
  ).toBe(true);
}

describe("reading: every processor reads the source stream and applies only its partitions' entries", () => {
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
    await converge({ group }, [a, b], [6, 6]);
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
    // Both read the whole stream, each applied only the entries of the partitions it held (no partition moved meanwhile).
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
    expect((await within(() => a.partitions.length === P, 5_000)).ok).toBe(true);
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
    expect(a.partitions.map((h) => h.partition)).toContain(partition);
  });
});

describe('ownership: each partition held by one processor at a time, shared fairly and cooperatively', () => {
  it('12 partitions go 12 → 6+6 → 4+4+4 as processors join; only moved partitions change hands, the rest keep their token', async () => {
    const setup = isolatedProfileSetup(ctx.redis);
    const load = backgroundLoad(setup, 41);
    const all: StreamProcessor[] = [];
    const exclusive = watchExclusive(() => all);
    try {
      const a = processor(setup, 'a');
      all.push(a);
      await a.start();
      await converge(setup, [a], [12]);
      await sleep(300);
      const alone = await readLeases(ctx.redis, setup.group, P);
      const fencesAlone = await readFences(ctx.redis, setup.group, P);
      expect(alone.every((l) => l?.holder === 'a')).toBe(true);

      const b = processor(setup, 'b');
      all.push(b);
      await b.start();
      await converge(setup, [a, b], [6, 6]);
      await sleep(300);
      const pair = await readLeases(ctx.redis, setup.group, P);
      const fencesPair = await readFences(ctx.redis, setup.group, P);
      expectOnlyMovedChanged(alone, pair, fencesAlone, fencesPair, 'b', 6);
      expect(a.share).toEqual({ share: 6, members: 2 });

      const c = processor(setup, 'c');
      all.push(c);
      await c.start();
      await converge(setup, [a, b, c], [4, 4, 4]);
      await sleep(300);
      const three = await readLeases(ctx.redis, setup.group, P);
      const fencesThree = await readFences(ctx.redis, setup.group, P);
      expectOnlyMovedChanged(pair, three, fencesPair, fencesThree, 'c', 4);
      expect([a.share, b.share, c.share]).toEqual([
        { share: 4, members: 3 },
        { share: 4, members: 3 },
        { share: 4, members: 3 },
      ]);
      // Each stream's epoch of each partition is its holder's token (what every apply is checked against).
      for (const stream of Object.values(setup.streams)) {
        const epochs = await ctx.redis.mget(...Array.from({ length: P }, (_, p) => keys.epoch(stream, setup.group, p)));
        expect(epochs).toEqual(three.map((l) => l?.token));
      }

      await expectAllAppliedOnce(setup, await load.stop());
    } finally {
      await load.stop();
      exclusive.stop();
    }
    expect(exclusive.samples()).toBeGreaterThan(100);
    expect(exclusive.violations).toEqual([]);
  });

  it('stop() hands its partitions over at once: the others hold them within ~3 rebalance intervals, far before the lease', async () => {
    const setup = isolatedProfileSetup(ctx.redis);
    const load = backgroundLoad(setup, 42);
    const [a, b, c] = ['a', 'b', 'c'].map((name) => processor(setup, name)) as [
      StreamProcessor,
      StreamProcessor,
      StreamProcessor,
    ];
    const exclusive = watchExclusive(() => [a, b, c]);
    try {
      await Promise.all([a.start(), b.start(), c.start()]);
      await converge(setup, [a, b, c], [4, 4, 4]);
      const before = await readFences(ctx.redis, setup.group, P);
      const cHeld = c.partitions.map((p) => p.partition);
      await c.stop();
      // Given back and gone from the members, as stop() resolves.
      const leases = await readLeases(ctx.redis, setup.group, P);
      expect(leases.filter((l) => l?.holder === 'c')).toEqual([]);
      expect(await ctx.redis.zscore(keys.members(setup.group), 'c')).toBeNull();
      const taken = await within(() => converged(setup, [a, b], [6, 6]), 5_000);
      expect(taken.ok).toBe(true);
      expect(taken.ms, `handover took ${Math.round(taken.ms)} ms`).toBeLessThan(3 * REBALANCE_MS + 200);
      // Only c's partitions moved, once each.
      const after = await readFences(ctx.redis, setup.group, P);
      expect(after.map((f, p) => f - (before[p] as number))).toEqual(
        Array.from({ length: P }, (_, p) => (cHeld.includes(p) ? 1 : 0)),
      );
      await expectAllAppliedOnce(setup, await load.stop());
    } finally {
      await load.stop();
      exclusive.stop();
    }
    expect(exclusive.violations).toEqual([]);
  });

  it('a processor that just disappears (its connections cut, no stop()) is replaced once its lease runs out, not before; it then finds its partitions gone', async () => {
    const setup = isolatedProfileSetup(ctx.redis);
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
      await converge(setup, [a, b, d], [4, 4, 4]);
      // A few rounds of renewals first: the leases it holds now are renewed ones, not just taken.
      await sleep(3 * REBALANCE_MS);
      const dHeld = d.partitions.map((p) => p.partition);
      const before = await readLeases(ctx.redis, setup.group, P);

      proxy.cut();
      const replaced = await within(() => converged(setup, [a, b], [6, 6]), LEASE_MS + 3_000);
      expect(replaced.ok).toBe(true);
      // Its last renewal was at most one round before the cut: the leases ran out no sooner than that.
      expect(replaced.ms, `replaced after ${Math.round(replaced.ms)} ms`).toBeGreaterThan(
        LEASE_MS - REBALANCE_MS - 150,
      );
      expect(replaced.ms, `replaced after ${Math.round(replaced.ms)} ms`).toBeLessThan(
        LEASE_MS + 3 * REBALANCE_MS + 500,
      );
      const after = await readLeases(ctx.redis, setup.group, P);
      for (let p = 0; p < P; p++) {
        if (dHeld.includes(p)) expect(Number(after[p]?.token)).toBeGreaterThan(Number(before[p]?.token));
        else expect(after[p]).toEqual(before[p]);
      }
      // Cut off, it still believes it holds them: only fencing keeps it from applying (see below).
      expect(d.partitions.map((p) => p.partition)).toEqual(dHeld);

      proxy.restore();
      const noticed = await within(() => log.said(/partition lease lost|claimed by another processor/), 5_000);
      expect(noticed.ok, JSON.stringify(log.lines.slice(-10))).toBe(true);
      // Back, it rejoins and gets a fair share again, with new tokens.
      await converge(setup, [a, b, d], [4, 4, 4], 8_000);
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

  it('a running processor whose partition is claimed by a later token refuses its own apply, drops the partition, and the next holder applies the entry once', async () => {
    const setup = isolatedProfileSetup(ctx.redis);
    const log = capturingLogger();
    // Rounds 20 s apart: it cannot learn of the successor from its lease, only from the fenced apply.
    const a = processor(setup, 'a', { leaseMs: 60_000, rebalanceIntervalMs: 20_000, logger: log });
    await a.start();
    expect((await within(() => a.partitions.length === P, 5_000)).ok).toBe(true);
    const user = '1';
    const partition = designPartition(user, P);
    const stale = a.partitions.find((p) => p.partition === partition)?.token as string;
    // A successor claims the partition as rebalance.lua and take-partition-2.lua would: next fencing
    // token, the lease, then the epoch of each stream.
    const successor = await ctx.redis.incr(keys.fence(setup.group, partition));
    expect(successor).toBeGreaterThan(Number(stale));
    await ctx.redis.set(keys.lease(setup.group, partition), `${successor} ghost`, 'PX', 60_000);
    const ownership = new PartitionOwnership(ctx.redis, setup.group, 'ghost', P, 60_000);
    for (const stream of Object.values(setup.streams))
      await ownership.take(
        keys.epoch(stream, setup.group, partition),
        setup.snapshots.cursorKey(stream, partition),
        String(successor),
      );

    const id = await ctx.redis.xadd(setup.streams.activity, '*', 'user_id', user, 'command', 'kick', 'object', 'x');
    const refused = await within(() => log.said(/claimed by another processor/), 5_000);
    expect(refused.ok, JSON.stringify(log.lines.slice(-5))).toBe(true);
    expect(await setup.snapshots.read(user)).toBeUndefined();
    expect(await setup.snapshots.cursor(setup.streams.activity, partition)).toBe('0-0');
    expect(await setup.snapshots.totals(setup.streams.activity)).toEqual({ applied: 0, skipped: 0, deadLettered: 0 });
    expect(a.partitions.map((p) => p.partition)).not.toContain(partition);
    // The entry waits in the stream for the partition's holder: the only one after its partition's cursor.
    const left = await unappliedPerPartition(ctx.redis, setup.snapshots, setup.streams.activity, P, SUBJECT_FIELDS);
    expect(left).toEqual(Array.from({ length: P }, (_, p) => (p === partition ? 1 : 0)));
    expect(compareEntryIds(await setup.snapshots.cursor(setup.streams.activity, partition), String(id))).toBeLessThan(
      0,
    );

    // The ghost goes; a real processor takes the partition over and applies the entry, once.
    await a.stop();
    await ctx.redis.del(keys.lease(setup.group, partition));
    const b = processor(setup, 'b');
    await b.start();
    await expectAllAppliedOnce(setup, 1);
    expect((await setup.snapshots.read(user))?.counters['kick']).toBe(1);
    expect(Number(b.partitions.find((p) => p.partition === partition)?.token)).toBeGreaterThan(successor);
  });
});

/**
 * Between two readings of the leases: exactly `moved` partitions changed holder, all to `newcomer`,
 * each with one new fencing token (no partition bounced); every other partition kept its holder,
 * its token and its fencing counter.
 */
function expectOnlyMovedChanged(
  before: readonly (Lease | undefined)[],
  after: readonly (Lease | undefined)[],
  fencesBefore: readonly number[],
  fencesAfter: readonly number[],
  newcomer: string,
  moved: number,
): void {
  const changed = before.flatMap((l, p) => (l?.holder === after[p]?.holder ? [] : [p]));
  expect(changed).toHaveLength(moved);
  for (let p = 0; p < before.length; p++) {
    if (changed.includes(p)) {
      expect(after[p]?.holder).toBe(newcomer);
      expect(fencesAfter[p]).toBe((fencesBefore[p] as number) + 1);
      expect(Number(after[p]?.token)).toBe(fencesAfter[p]);
    } else {
      expect(after[p]).toEqual(before[p]);
      expect(fencesAfter[p]).toBe(fencesBefore[p]);
    }
  }
  // Fair: every holder has the same number.
  expect(new Set(shareCounts(after)).size).toBe(1);
}
