/**
 * The partition design's guarantees, on a real Redis: routing (route.lua), ownership (rebalance.lua,
 * release-partitions.lua: leases and fair shares) and fencing (take-partition-2.lua and the epoch
 * checked by apply-batch.lua). Each test reads the state from Redis itself (partition streams,
 * leases, fencing counters, epochs, cursors, totals) with the key layout written out in
 * test/support/partitions.ts, not through the code under test.
 *
 * How each was checked to fail (each change made alone, the tests run, the change reverted):
 * - routing: route.lua hashing `string.sub(sha1, 1, 7)` fails the four routing tests; route.lua's
 *   count check removed fails "RS_PARTITIONS_MISMATCH"; the processor not resolving reference
 *   entries (resolveReferences returning its input) fails the >7000-item test (the stub is decoded,
 *   dead-lettered: applied 2 of 3), and route.lua's MAX_FIELDS raised to 100000 fails it too (the
 *   entry is copied whole, no reference). The two-routers race guards the script's atomicity: no
 *   one-line change of route.lua breaks it alone (a race cannot split a Lua script); it checks the
 *   sum of what each caller was told it routed against what was appended.
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
import { RedisEventStore } from '@redsource/event-store';
import { processorKeys, StreamProcessor, type Logger, type ProcessorSettingsInput } from '@redsource/processor';
import { SnapshotStore } from '@redsource/snapshot-store';
import { PartitionOwnership } from '../src/partitions/ownership.ts';
import { PartitionRouter } from '../src/partitions/router.ts';
import { partitionOfEntry } from '../src/partitions/subject.ts';
import { profileCatalog } from '../../../apps/profile-api/src/domain/events.ts';
import {
  capturingLogger,
  CuttableProxy,
  designPartition,
  expectKeyLayout,
  keys,
  partitionContents,
  readFences,
  readLeases,
  shareCounts,
  unappliedPerPartition,
  unrouted,
  within,
  type Lease,
} from '../../../test/support/partitions.ts';
import { isolatedProfileSetup } from '../../../test/support/profile-setup.ts';
import { randomCommands, referenceFold, snapshotDifferences } from '../../../test/support/model.ts';
import { pendingCount, unique, useTestRedis } from '../../../test/support/redis.ts';
import { rejection } from '../../../test/support/rejection.ts';

const ctx = useTestRedis();

const SUBJECT_FIELDS = ['user_id', 'userId'];
const P = 12;
const LEASE_MS = 1_500;
const REBALANCE_MS = 100;
/** Fast ownership for these tests: a dead processor is replaced within 1.5 s. */
const OWNERSHIP = { partitions: P, leaseMs: LEASE_MS, rebalanceIntervalMs: REBALANCE_MS, blockMs: 100, batchSize: 50, gapFillAfterMs: 500 };

type Setup = ReturnType<typeof isolatedProfileSetup>;

/** A processor of the setup's group (stopped after the test), on a client of its own unless given one. */
function processor(setup: Setup, consumer: string, options: ProcessorSettingsInput & { client?: Redis; logger?: Logger } = {}): StreamProcessor {
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
      for (const [stream, ...fields] of commands.slice(appended, appended + chunk)) pipeline.xadd(stream, '*', ...fields);
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
 * Waits until all `appended` entries are applied (totals over the three streams), nothing is left
 * unrouted or after a partition's cursor; then expects the snapshots to equal the reference fold.
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
      left += await unrouted(ctx.redis, stream, setup.group);
      left += (await unappliedPerPartition(ctx.redis, setup.snapshots, stream, setup.group, P)).reduce((a, b) => a + b, 0);
      pending += await pendingCount(ctx.redis, stream, setup.group);
    }
    return { applied, deadLettered, left, pending };
  };
  await within(async () => {
    const s = await state();
    return s.applied >= appended && s.left === 0;
  }, 20_000, 50);
  // A moment more: an entry applied twice would show as applied > appended.
  await sleep(200);
  expect(await state()).toEqual({ applied: appended, deadLettered: 0, left: 0, pending: 0 });
  expect(await snapshotDifferences(setup.snapshots, await referenceFold(setup.eventStore, setup.streams))).toEqual([]);
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
async function converged(setup: Setup, processors: readonly StreamProcessor[], counts: readonly number[]): Promise<boolean> {
  const leases = await readLeases(ctx.redis, setup.group, P);
  const held = processors.map((p) => p.partitions);
  if (held.some((h, i) => h.length !== counts[i] || h.some((x) => x.state !== 'active'))) return false;
  if (leases.some((l) => l === undefined)) return false;
  return held.every((h, i) => h.every((x) => leases[x.partition]?.holder === processors[i]?.consumer && leases[x.partition]?.token === x.token));
}

async function converge(setup: Setup, processors: readonly StreamProcessor[], counts: readonly number[], timeoutMs = 5_000): Promise<void> {
  const done = await within(() => converged(setup, processors, counts), timeoutMs);
  const leases = await readLeases(ctx.redis, setup.group, P);
  expect(done.ok, `want ${JSON.stringify(counts)}; in memory ${JSON.stringify(processors.map((p) => p.partitions))}; leases ${JSON.stringify(leases)}`).toBe(true);
}

describe('routing: route.lua copies each entry once, under its id, into its subject\'s partition', () => {
  async function routed(partitions = P) {
    const stream = unique('route');
    const group = unique('g');
    await ctx.redis.xgroup('CREATE', stream, group, '0', 'MKSTREAM');
    const router = (client: Redis = ctx.redis, count = partitions) => new PartitionRouter(client, group, count, () => SUBJECT_FIELDS);
    return { stream, group, router };
  }

  it('the processor and this file name the same keys', () => {
    expectKeyLayout();
  });

  it('routes every entry exactly once with its own id and fields to sha1(subject) % partitions (partition 0 without a subject)', async () => {
    const { stream, group, router } = await routed();
    const subjects = ['1', '2', '__proto__', 'constructor', 'toString', 'ünïcødé', '日本語', '😀', '', '007', ...Array.from({ length: 40 }, (_, i) => `u${i}`), ...Array.from({ length: 20 }, (_, i) => String(i * 37))];
    const written: { fields: string[]; subject: string | undefined }[] = [];
    for (let i = 0; i < 3_000; i++) {
      const s = subjects[i % subjects.length] as string;
      const numeric = /^\d+$/.test(s) && !s.startsWith('0');
      switch (i % 7) {
        case 0: written.push({ fields: ['user_id', s, 'command', 'like', 'page', `p${i}`], subject: s }); break;
        case 1: written.push({ fields: ['x', String(i), 'userId', s], subject: s }); break;
        // user_id comes first in the order of preference, wherever it stands in the entry.
        case 2: written.push({ fields: ['userId', `other${i}`, 'user_id', s], subject: s }); break;
        case 3: written.push({ fields: ['specversion', '1.0', 'type', 'like', 'data', JSON.stringify({ object: 'p', userId: s })], subject: s }); break;
        case 4: written.push(numeric
          ? { fields: ['specversion', '1.0', 'type', 'like', 'data', `{"userId":${s},"object":"p"}`, 'subject', 'not-this'], subject: s }
          : { fields: ['specversion', '1.0', 'type', 'like', 'data', '{"object":"p"}', 'subject', s], subject: s }); break;
        case 5: written.push({ fields: ['command', 'like', 'page', 'p'], subject: undefined }); break;
        default: written.push({ fields: ['specversion', '1.0', 'type', 'like', 'data', i % 2 ? '[1,2]' : 'not json'], subject: undefined });
      }
    }
    const pipeline = ctx.redis.pipeline();
    for (const w of written) pipeline.xadd(stream, '*', ...w.fields);
    const ids = ((await pipeline.exec()) ?? []).map(([, id]) => String(id));

    // Small calls, so one routing spans many script runs.
    let total = 0;
    let calls = 0;
    for (let r = await router().route(stream, 97); r.routed > 0; r = await router().route(stream, 97)) {
      total += r.routed;
      calls++;
    }
    expect(calls).toBeGreaterThan(30);
    expect(total).toBe(written.length);

    const landed = await partitionContents(ctx.redis, stream, group, P);
    expect(landed).toHaveLength(written.length);
    const byId = new Map(landed.map((e) => [e.id, e]));
    expect(byId.size).toBe(written.length);
    for (const [i, w] of written.entries()) {
      const copy = byId.get(ids[i] as string);
      const want = w.subject === undefined ? 0 : designPartition(w.subject, P);
      expect({ partition: copy?.partition, fields: copy?.fields }, JSON.stringify(w)).toEqual({ partition: want, fields: w.fields });
      expect(partitionOfEntry(w.fields, SUBJECT_FIELDS, P)).toBe(want);
    }
    // Every partition got work, and partition 0 has at least the entries without a subject.
    expect(new Set(landed.map((e) => e.partition)).size).toBe(P);
    expect(landed.filter((e) => e.partition === 0).length).toBeGreaterThanOrEqual(written.filter((w) => w.subject === undefined).length);
    // The group: everything routed, nothing left pending (route.lua acks in the same step).
    expect(await unrouted(ctx.redis, stream, group)).toBe(0);
    expect(await pendingCount(ctx.redis, stream, group)).toBe(0);
    expect(await ctx.redis.get(keys.count(stream, group))).toBe(String(P));
  });

  it('refuses to route with another partition count (RS_PARTITIONS_MISMATCH) and routes nothing then', async () => {
    const { stream, group, router } = await routed();
    await ctx.redis.xadd(stream, '*', 'user_id', '1', 'command', 'like');
    expect((await router().route(stream)).routed).toBe(1);
    const id = await ctx.redis.xadd(stream, '*', 'user_id', '2', 'command', 'like');
    for (const other of [8, 13, 1]) {
      const error = await rejection(router(ctx.redis, other).route(stream));
      expect(String(error)).toMatch(/RS_PARTITIONS_MISMATCH.*12.*not/);
    }
    expect(await ctx.redis.get(keys.count(stream, group))).toBe('12');
    expect(await unrouted(ctx.redis, stream, group)).toBe(1);
    expect((await partitionContents(ctx.redis, stream, group, 13)).map((e) => e.id)).not.toContain(id);
    expect((await router().route(stream)).routed).toBe(1);
    expect((await partitionContents(ctx.redis, stream, group, P)).find((e) => e.id === id)?.partition).toBe(designPartition('2', P));
  });

  it('two routers racing while entries are appended route each entry exactly once', async () => {
    const { stream, group, router } = await routed();
    const appender = ctx.server.client();
    const routers = [router(ctx.server.client()), router(ctx.server.client())];
    let appending = true;
    const counts = [0, 0];
    const race = routers.map(async (r, i) => {
      // Until appending stops and a last call finds nothing.
      for (;;) {
        const stop = !appending;
        const { routed: n } = await r.route(stream, 7);
        counts[i] = (counts[i] as number) + n;
        if (stop && n === 0) return;
      }
    });
    let appended = 0;
    for (let chunk = 0; chunk < 60; chunk++) {
      const pipeline = appender.pipeline();
      for (let j = 0; j < 50; j++) pipeline.xadd(stream, '*', 'user_id', String((chunk * 50 + j) % 97), 'command', 'like');
      await pipeline.exec();
      appended += 50;
      await sleep(2);
    }
    appending = false;
    await Promise.all(race);
    // Both did share the work, and together routed each entry once.
    expect(counts.every((n) => n > 0), JSON.stringify(counts)).toBe(true);
    expect((counts[0] as number) + (counts[1] as number)).toBe(appended);
    const landed = await partitionContents(ctx.redis, stream, group, P);
    expect(new Set(landed.map((e) => e.id)).size).toBe(appended);
    expect(landed).toHaveLength(appended);
    for (const e of landed) expect(e.partition).toBe(designPartition(e.fields[1] as string, P));
    expect(await unrouted(ctx.redis, stream, group)).toBe(0);
  });

  it('routes an entry of more than 7000 field items (3600 pairs) as a reference, and the processor applies it in its user\'s order', async () => {
    const setup = isolatedProfileSetup(ctx.redis);
    const user = 'big';
    const personal = Array.from({ length: 3_597 }, (_, i) => [`f${i}`, `v${i}`]).flat();
    const big = ['user_id', user, 'command', 'update', 'name', 'Big', ...personal];
    expect(big.length).toBe(7_200);
    const first = await ctx.redis.xadd(setup.streams.updates, '*', 'user_id', user, 'command', 'register', 'name', 'Small', 'f0', 'before');
    const bigId = await ctx.redis.xadd(setup.streams.updates, '*', ...big);
    const last = await ctx.redis.xadd(setup.streams.updates, '*', 'user_id', user, 'action', 'update', 'f1', 'after');
    // Routed as the processors will route it (same group, count and subject fields), before any starts.
    await ctx.redis.xgroup('CREATE', setup.streams.updates, setup.group, '0', 'MKSTREAM');
    expect((await new PartitionRouter(ctx.redis, setup.group, P, () => SUBJECT_FIELDS).route(setup.streams.updates)).routed).toBe(3);
    const partition = designPartition(user, P);
    const copies = await ctx.redis.xrange(keys.partitionStream(setup.streams.updates, setup.group, partition), '-', '+');
    expect(copies.map(([id]) => id)).toEqual([first, bigId, last]);
    expect(copies[1]?.[1]).toEqual(['__redsource_ref', '1']);

    const p = processor(setup, 'solo');
    await p.start();
    await expectAllAppliedOnce(setup, 3);
    const snapshot = await setup.snapshots.read(user);
    expect(snapshot?.fields['name']).toBe('Big');
    expect(snapshot?.fields['f0']).toBe('v0');
    expect(snapshot?.fields['f1']).toBe('after');
    expect(snapshot?.fields['f3596']).toBe('v3596');
    expect(Object.keys(snapshot?.fields ?? {})).toHaveLength(3_598);
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
      expect([a.share, b.share, c.share]).toEqual([{ share: 4, members: 3 }, { share: 4, members: 3 }, { share: 4, members: 3 }]);
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
    const [a, b, c] = ['a', 'b', 'c'].map((name) => processor(setup, name)) as [StreamProcessor, StreamProcessor, StreamProcessor];
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
      expect(after.map((f, p) => f - (before[p] as number))).toEqual(Array.from({ length: P }, (_, p) => (cHeld.includes(p) ? 1 : 0)));
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
      expect(replaced.ms, `replaced after ${Math.round(replaced.ms)} ms`).toBeGreaterThan(LEASE_MS - REBALANCE_MS - 150);
      expect(replaced.ms, `replaced after ${Math.round(replaced.ms)} ms`).toBeLessThan(LEASE_MS + 3 * REBALANCE_MS + 500);
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
    const partitionStream = keys.partitionStream(stream, group, partition);
    const ids: string[] = [];
    for (const fields of [['user_id', 'u1', 'n', '1'], ['garbage', 'x'], ['user_id', 'u1', 'n', '2']]) {
      const id = await ctx.redis.xadd(stream, '*', ...fields);
      await ctx.redis.xadd(partitionStream, id as string, ...fields);
      ids.push(id as string);
    }
    const epoch = keys.epoch(stream, group, partition);
    const batch = (token: string) =>
      snapshots.applyBatch({
        stream,
        entries: [
          { entryId: ids[0] as string, changes: [{ snapshotId: 'u1', mutations: [{ op: 'create' }, { op: 'increment', counter: 'n' }] }] },
          { entryId: ids[1] as string, deadLetter: { reason: 'RS_TEST poison', fields: ['garbage', 'x'] } },
          { entryId: ids[2] as string, changes: [{ snapshotId: 'u1', mutations: [{ op: 'increment', counter: 'n' }] }] },
        ],
        deadLetterStream: processorKeys.deadLetters(stream),
        group,
        contiguous: true,
        partition: { index: partition, stream: partitionStream },
        fence: { key: epoch, token, code: 'RS_PARTITION_LOST' },
      });
    const untouched = async () => {
      expect(await ctx.redis.exists(snapshots.key('u1'))).toBe(0);
      expect(await snapshots.cursor(stream, partition)).toBe('0-0');
      expect(await snapshots.totals(stream)).toEqual({ applied: 0, skipped: 0, deadLettered: 0 });
      expect(await ctx.redis.xlen(processorKeys.deadLetters(stream))).toBe(0);
      expect(await ctx.redis.scard(`redsource:{${stream}}:dead-lettered-ids`)).toBe(0);
      expect(await ctx.redis.xlen(partitionStream)).toBe(3);
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
    expect({ applied: result.applied, deadLettered: result.deadLettered, cursor: result.cursor }).toEqual({ applied: 2, deadLettered: 1, cursor: ids[2] });
    expect((await snapshots.read('u1'))?.counters['n']).toBe(2);
    // Trimmed below the cursor: what is applied is not kept twice.
    expect((await ctx.redis.xrange(partitionStream, '-', '+')).map(([id]) => id)).toEqual([ids[2]]);
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
    for (const stream of Object.values(setup.streams)) await ownership.take(keys.epoch(stream, setup.group, partition), setup.snapshots.cursorKey(stream, partition), String(successor));

    const id = await ctx.redis.xadd(setup.streams.activity, '*', 'user_id', user, 'command', 'kick', 'object', 'x');
    const refused = await within(() => log.said(/claimed by another processor/), 5_000);
    expect(refused.ok, JSON.stringify(log.lines.slice(-5))).toBe(true);
    expect(await setup.snapshots.read(user)).toBeUndefined();
    expect(await setup.snapshots.cursor(setup.streams.activity, partition)).toBe('0-0');
    expect(await setup.snapshots.totals(setup.streams.activity)).toEqual({ applied: 0, skipped: 0, deadLettered: 0 });
    expect(a.partitions.map((p) => p.partition)).not.toContain(partition);
    // The entry waits in the partition for its holder.
    expect((await ctx.redis.xrange(keys.partitionStream(setup.streams.activity, setup.group, partition), '-', '+')).map(([i]) => i)).toEqual([id]);

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
