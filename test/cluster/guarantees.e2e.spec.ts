/**
 * The processing guarantee on a Redis Cluster (3 masters, one replica each), end to end: the
 * profile processor (StreamProcessor instances in this process, each on an ioredis Cluster client of
 * its own with the app's cluster options) under a continuous load of raw XADDs sent with a Cluster
 * client (the model's random commands, envelopes naming the user as a JSON number, 1% poison), while
 * processors join and leave, freeze past their lease, slots move between masters and replicas take
 * over. Afterwards, per case: every confirmed XADD is in its stream; every entry of the streams is
 * applied or dead-lettered exactly once (the totals hashes `redsource:{<stream>}:totals:profiles`
 * against the streams); nothing is left unapplied (no entry of a partition after its cursor
 * `redsource:{<stream>}:applied:profiles:p<n>` in the source stream, none pending in the group); and every snapshot,
 * read key by key, equals the reference fold (which depends on each user's order), with no
 * snapshot for a user the fold does not know.
 *
 * How these were checked to fail (in a copy of the tree, each change alone): with check-batch.lua's
 * fence check removed, the zombie frozen before its batch is refused only by apply-batch.lua, not
 * check-batch; with apply-snapshots.lua's token check removed, the zombie frozen before its snapshot
 * writes is refused only after them; with apply-snapshots.lua applying entries at or below a
 * snapshot's marker, the reshard case's retried batches count an activity twice (a snapshot differs).
 *
 * In process rather than `redsource process` children (faults.e2e.spec.ts runs those): the zombie
 * needs its commands held at an exact step. A zombie is therefore a processor whose every Redis command is held
 * (its ownership round, reads and applies: what a SIGSTOPped process would send) from an exact
 * step until its successor has moved on, then sent.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { afterEach, describe, expect, it } from 'vitest';
import { useTestCluster } from '../support/cluster.ts';
import {
  ClusterScenario,
  compareIds,
  errorStats,
  errorStatsSince,
  migrateSlotSlowly,
  type ProcessorHooks,
  type ScenarioProcessor,
} from '../support/cluster-scenario.ts';
import { designPartition, within } from '../support/partitions.ts';

const ctx = useTestCluster({ masters: 3, replicas: 1 });
const SETTINGS = { partitions: 12, leaseMs: 1_500, rebalanceIntervalMs: 100, users: 150 };
let scenario: ClusterScenario | undefined;

afterEach(async () => {
  await scenario?.stopAll();
  scenario = undefined;
});

function begin(): ClusterScenario {
  scenario = new ClusterScenario(ctx.cluster, SETTINGS);
  return scenario;
}

/** The master serving each user's snapshot now: port → users. */
async function snapshotOwners(s: ClusterScenario): Promise<Map<number, string[]>> {
  const masters = (await ctx.cluster.topology()).filter((n) => n.role === 'master' && !n.flags.includes('fail'));
  const owners = new Map<number, string[]>();
  for (let user = 1; user <= SETTINGS.users; user++) {
    const slot = ctx.cluster.slotOf(s.snapshots.key(String(user)));
    const port = masters.find((n) => n.slots.some(([a, b]) => slot >= a && slot <= b))?.port;
    if (port === undefined) throw new Error(`no master serves slot ${slot}`);
    owners.set(port, [...(owners.get(port) ?? []), String(user)]);
  }
  return owners;
}

const redirections = (stats: Record<string, number>) =>
  ['MOVED', 'ASK', 'TRYAGAIN', 'CLUSTERDOWN', 'NOSCRIPT', 'UNBLOCKED'].map((k) => `${k} ${stats[k] ?? 0}`).join(', ');

describe('the processing guarantee on a 3-master Redis Cluster', () => {
  it('baseline: two processors apply a continuous load exactly once', async () => {
    const s = begin();
    await s.start('a');
    await s.start('b');
    const load = s.load({ seed: 1 });
    await s.waitForShares(['a', 'b'], 5_000);
    await sleep(2_500);
    await load.stop();
    s.expectExactlyOnce('baseline', await s.settle(15_000));
  }, 40_000);

  it('rebalancing: processors join, stop gracefully, and vanish (leases run out) under load', async () => {
    const s = begin();
    await s.start('p1');
    const load = s.load({ seed: 2 });
    await s.waitForShares(['p1'], 5_000);
    await sleep(500);
    await s.start('p2');
    await s.start('p3');
    const joinMs = await s.waitForShares(['p1', 'p2', 'p3'], 8_000);
    await sleep(700);
    // A graceful stop hands its partitions over at once (well within a lease).
    let started = performance.now();
    await s.stop('p2');
    const leaveMs = Math.round(performance.now() - started) + (await s.waitForShares(['p1', 'p3'], 5_000));
    await sleep(500);
    // Cut off without stop(): its leases only run out.
    const p3 = s.processors.get('p3') as ScenarioProcessor;
    p3.client.disconnect();
    started = performance.now();
    const takeoverMs = await s.waitForShares(['p1'], SETTINGS.leaseMs + 5_000);
    await sleep(500);
    await load.stop();
    const outcome = await s.settle(15_000);
    console.log(
      `[rebalancing] 3 shares ${joinMs} ms after p2+p3 joined; p2's share moved ${leaveMs} ms after its stop(); p3's ${takeoverMs} ms after it was cut off (lease ${SETTINGS.leaseMs} ms)`,
    );
    expect(leaveMs).toBeLessThan(SETTINGS.leaseMs);
    expect(takeoverMs).toBeGreaterThan(SETTINGS.leaseMs - 3 * SETTINGS.rebalanceIntervalMs);
    s.expectExactlyOnce('rebalancing', outcome);
  }, 45_000);

  it('zombie: a processor frozen past its lease and thawed after its successor moved on applies nothing', async () => {
    const s = begin();
    // Freezes whichever processor reaches the step first for the gate's user (the holder of its partition).
    const gate: {
      user: string;
      step: 'handler' | 'apply-snapshots' | undefined;
      zombie: ScenarioProcessor | undefined;
      at: number;
    } = { user: '', step: undefined, zombie: undefined, at: 0 };
    const freeze = (self: ScenarioProcessor) => {
      gate.zombie = self;
      gate.at = performance.now();
      self.client.pause();
    };
    const hooks: ProcessorHooks = {
      // Before its batch is checked and applied: the whole batch is in hand, nothing sent for it yet.
      onEvent: (event, self) => {
        if (gate.step === 'handler' && !gate.zombie && (event.data as { userId?: unknown }).userId === gate.user)
          freeze(self);
      },
      // On a cluster the batch is applied in steps: frozen after check-batch passed the fence, just before the snapshot writes of the gate user's slot.
      beforeSend: (command, args, self) => {
        if (gate.step !== 'apply-snapshots' || gate.zombie || command !== 'redsourceApplySnapshots') return;
        if (args.slice(1, 1 + Number(args[0])).includes(s.snapshots.key(gate.user))) freeze(self);
      },
    };
    await s.start('a', hooks);
    await s.start('b', hooks);
    const load = s.load({ seed: 3 });
    await s.waitForShares(['a', 'b'], 5_000);
    await sleep(300);

    for (const [step, user, refusedBy] of [
      ['handler', 'z1', 'redsourceCheckBatch'],
      ['apply-snapshots', 'z2', 'redsourceApplySnapshots'],
    ] as const) {
      const partition = designPartition(user, SETTINGS.partitions);
      gate.zombie = undefined;
      gate.user = user;
      gate.step = step;
      const entry = await s.append([s.streams.activity, 'user_id', user, 'command', 'comment', 'object', 'p1']);
      expect(
        (await within(() => gate.zombie !== undefined, 5_000)).ok,
        `nobody reached ${step} for ${user}\n${s.logs()}`,
      ).toBe(true);
      const zombie = gate.zombie as unknown as ScenarioProcessor;
      const successor = zombie.name === 'a' ? 'b' : 'a';
      // The unit in hand: the gate user's partition of the activity stream (a lease covers one partition of one stream).
      const zombieToken = zombie.processor.partitions.find(
        (p) => p.stream === s.streams.activity && p.partition === partition,
      )?.token;
      expect(zombieToken, `${zombie.name} does not hold ${s.streams.activity}:${partition}`).toBeDefined();
      // The successor takes the partition over once the lease ran out, and applies past the entry in hand.
      const movedOn = await within(
        async () =>
          (await s.lease(s.streams.activity, partition))?.holder === successor &&
          compareIds(await s.snapshots.cursor(s.streams.activity, partition), entry) > 0,
        SETTINGS.leaseMs + 5_000,
        25,
      );
      expect(movedOn.ok, `${successor} did not move past ${entry} in partition ${partition}\n${s.logs()}`).toBe(true);
      const takeoverMs = Math.round(performance.now() - gate.at);
      await sleep(200);
      const successorToken = (await s.lease(s.streams.activity, partition))?.token;
      const refusalsBefore = zombie.client.refusals.length;
      const warnedBefore = zombie.logger.lines.filter((l) =>
        /partition claimed by another processor/.test(l.msg),
      ).length;
      zombie.client.resume();
      gate.step = undefined;
      const refused = await within(
        () =>
          zombie.client.refusals.slice(refusalsBefore).some((r) => r.command === refusedBy) &&
          zombie.logger.lines.filter((l) => /partition claimed by another processor/.test(l.msg)).length > warnedBefore,
        5_000,
      );
      const refusals = zombie.client.refusals.slice(refusalsBefore);
      console.log(
        `[zombie] frozen at ${step} for ${entry} (${user}, partition ${partition}, token ${zombieToken}); ${successor} took over with token ${successorToken} ` +
          `and applied past it ${takeoverMs} ms later; thawed: ${refusals.length} commands refused (${[...new Set(refusals.map((r) => r.command))].join(', ')}), ` +
          `e.g. ${refusals.find((r) => r.command === refusedBy)?.message ?? 'none'}`,
      );
      expect(
        refused.ok,
        `the thawed ${zombie.name} was not refused by ${refusedBy}: ${JSON.stringify(refusals)}\n${s.logs()}`,
      ).toBe(true);
      expect(Number(successorToken)).toBeGreaterThan(Number(zombieToken));
      // Both take part again.
      await s.waitForShares(['a', 'b'], 8_000);
    }
    await sleep(300);
    await load.stop();
    s.expectExactlyOnce('zombie', await s.settle(15_000));
  }, 45_000);

  it('reshard: the slots of the streams, the group and many snapshots move between masters while processing', async () => {
    const { cluster } = ctx;
    const s = begin();
    await s.start('a');
    await s.start('b');
    const load = s.load({ seed: 4 });
    await s.waitForShares(['a', 'b'], 5_000);
    await sleep(500);
    const before = await errorStats(cluster);
    const masters = await cluster.masters();
    const elsewhere = (port: number) => masters.find((p) => p !== port) as number;
    const moves: string[] = [];

    // A source stream's slot, with its partitions, cursors, epochs and totals, in one MIGRATE.
    let from = await cluster.nodeForKey(s.streams.updates);
    let started = performance.now();
    await cluster.moveSlot(cluster.slotOf(s.streams.updates), elsewhere(from));
    moves.push(
      `${s.streams.updates} ${from}→${await cluster.nodeForKey(s.streams.updates)} (${Math.round(performance.now() - started)} ms)`,
    );
    // Another, two keys per MIGRATE: its keys are split between two masters for a while (ASK, TRYAGAIN).
    // Meanwhile a batch's bookkeeping step fails after its snapshot writes, as when TRYAGAIN outlasts
    // the client's retries: the batch is applied again, and the snapshot markers must skip what it wrote.
    from = await cluster.nodeForKey(s.streams.activity);
    const a = s.processors.get('a') as ScenarioProcessor;
    a.client.failNext(
      'redsourceApplyBatch',
      10,
      'Too many Cluster redirections. Last error: ReplyError: TRYAGAIN Multiple keys request during rehashing of slot (injected by the test)',
    );
    const slow = await migrateSlotSlowly(cluster, cluster.slotOf(s.streams.activity), elsewhere(from));
    moves.push(
      `${s.streams.activity} ${from}→${await cluster.nodeForKey(s.streams.activity)} (${slow.keys} keys, 2 per MIGRATE, ${slow.ms} ms; ${a.client.injected} apply-batch calls failed after their snapshot writes)`,
    );
    // The group's ownership keys (members, leases, fencing counters).
    const groupKey = `redsource:{group:${s.group}}:members`;
    from = await cluster.nodeForKey(groupKey);
    await cluster.moveSlot(cluster.slotOf(groupKey), elsewhere(from));
    moves.push(`group ${from}→${await cluster.nodeForKey(groupKey)}`);
    // A third of the slots of the master with the most snapshots.
    const owners = await snapshotOwners(s);
    const [richest, users] = [...owners].sort((x, y) => y[1].length - x[1].length)[0] as [number, string[]];
    const target = elsewhere(richest);
    started = performance.now();
    await cluster.reshard(richest, target, 1_800);
    const after = await snapshotOwners(s);
    const movedSnapshots = users.filter((u) => after.get(target)?.includes(u)).length;
    moves.push(
      `1800 slots ${richest}→${target} with ${movedSnapshots} of its ${users.length} snapshots (${Math.round(performance.now() - started)} ms)`,
    );
    await sleep(500);
    await load.stop();
    const outcome = await s.settle(20_000);
    const errors = errorStatsSince(before, await errorStats(cluster));
    console.log(`[reshard] ${moves.join('; ')}; replies: ${redirections(errors)}`);
    expect(movedSnapshots).toBeGreaterThan(5);
    expect((errors['MOVED'] ?? 0) + (errors['ASK'] ?? 0)).toBeGreaterThan(0);
    // The slow move split the activity stream's keys between two masters: scripts over them were answered TRYAGAIN, and retried.
    expect(errors['TRYAGAIN'] ?? 0).toBeGreaterThan(0);
    expect(a.client.injected).toBe(10);
    s.expectExactlyOnce('reshard', outcome);
  }, 60_000);

  it('failover: the masters of a stream and of many snapshots hand over to their replicas while processing', async () => {
    const { cluster } = ctx;
    const s = begin();
    await s.start('a');
    await s.start('b');
    const load = s.load({ seed: 5 });
    await s.waitForShares(['a', 'b'], 5_000);
    await sleep(500);
    const before = await errorStats(cluster);
    const failovers: string[] = [];
    const failOver = async (what: string, master: number) => {
      const replica = (await cluster.replicas()).find((r) => r.master === master);
      if (!replica) throw new Error(`no replica of ${master}`);
      const started = performance.now();
      // CLUSTER FAILOVER (default): the master stops taking writes, the replica catches up with its
      // replication offset, then takes over: in sync, so no write the master confirmed is lost.
      await cluster.failover(replica.port);
      failovers.push(`${what}: ${master}→${replica.port} (${Math.round(performance.now() - started)} ms)`);
      return replica.port;
    };
    const streamMaster = await cluster.nodeForKey(s.streams.updates);
    expect(await failOver(`${s.streams.updates}'s master`, streamMaster)).toBe(
      await cluster.nodeForKey(s.streams.updates),
    );
    await sleep(700);
    const [richest, users] = [...(await snapshotOwners(s))].sort((x, y) => y[1].length - x[1].length)[0] as [
      number,
      string[],
    ];
    const promoted = await failOver(`master of ${users.length} snapshots`, richest);
    expect(await cluster.nodeForKey(s.snapshots.key(users[0] as string))).toBe(promoted);
    await sleep(700);
    await load.stop();
    const outcome = await s.settle(20_000);
    const errors = errorStatsSince(before, await errorStats(cluster));
    console.log(`[failover] ${failovers.join('; ')}; replies: ${redirections(errors)}`);
    s.expectExactlyOnce('failover', outcome);
  }, 60_000);
});
