/**
 * The single-Redis fault suite (test/faults/delivery-guarantees.e2e.spec.ts) on a 3-master Redis
 * Cluster (no replicas): processors SIGKILLed at random points and restarted under the same name,
 * one killed for good, every client connection dropped on every master, and a master SIGKILLed and
 * restarted (with AOF, appendfsync always) while processing. The load, the processors' settings and
 * the check are those of guarantees.e2e.spec.ts (ClusterScenario): every confirmed XADD is in its
 * stream; appended = applied + dead-lettered (the totals hashes against the streams), with the poison
 * dead-lettered once; nothing pending in the group; no entry of a partition after its cursor; every
 * snapshot equal to the reference fold (which depends on each user's order, and counts activity, so
 * an entry applied twice shows); no snapshot for a user the fold does not know.
 *
 * The kills need a process: those processors are `redsource process` children on the seed list
 * (ClusterScenario.spawn), as `redsource process` runs on a cluster; the other cases run processors
 * in this process (ClusterScenario.start), each on a Cluster client of its own with the app's options.
 *
 * What each case catches (a change to the source that turns it red; "tried" = made in this tree,
 * run, reverted):
 * - kill-restart: a processor crashed at any point and restarted under the same name (its leases and
 *   membership still in Redis under that name) must go on from its partitions' cursors in Redis, not
 *   from anything it had in memory, and must not apply twice what it or another applied: a gap shows
 *   as entries after a cursor, a double apply as an activity count off by one. Tried: apply-snapshots.lua
 *   applying entries at or below a snapshot's marker: green in 2 runs (10 SIGKILLs each); a random
 *   SIGKILL seldom lands in the few milliseconds between a batch's snapshot writes and its bookkeeping
 *   (apply-batch.lua). guarantees.e2e.spec.ts' reshard case catches that change deterministically.
 * - killed-for-good: a dead processor's partitions are taken only once its leases run out and a
 *   living member's round removes it from the members set. Tried: rebalance.lua without its
 *   ZREMRANGEBYSCORE (expired members kept): red, "partitions not shared by p1, p3 within 9500 ms"
 *   (the dead p2 still counts in the fair share, so its share stays free and unapplied: 4 partitions
 *   then, when a lease covered a partition of every stream; 12 of the 36 units, a partition of one
 *   stream each, now).
 * - client-kill: a dropped connection loses the reply of a script that ran, and ioredis sends it
 *   again (autoResendUnfulfilledCommands on reconnect; the Cluster client's retry of "Connection is
 *   closed."). Tried: apply-batch.lua treating every entry as new (no skip at or below the
 *   partition's cursor): red, applied + dead-lettered = appended + 1 (a resent batch counted twice).
 *   Also tried apply-snapshots.lua's marker break here: green in 1 run (no resent snapshot write).
 * - master-restart: confirmed writes (stream entries, cursors, snapshot markers) must survive a
 *   crash of the master serving them, and a processor must retry a batch that failed because its
 *   node was away rather than move past it. Without AOF the restarted masters come back empty
 *   (confirmed XADDs lost, cursors gone); a processor that treated a failed apply as done would leave
 *   entries after their partition's cursor. Not tried.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { afterEach, describe, expect, it } from 'vitest';
import { useTestCluster } from '../support/cluster.ts';
import { ClusterScenario, dropClients } from '../support/cluster-scenario.ts';
import { prng } from '../support/model.ts';
import { keys } from '../support/partitions.ts';

const SETTINGS = { partitions: 12, leaseMs: 1_500, rebalanceIntervalMs: 100, users: 150 };
let scenario: ClusterScenario | undefined;

afterEach(async () => {
  await scenario?.stopAll();
  scenario = undefined;
});

describe('faults on a 3-master Redis Cluster: processes and connections', () => {
  const ctx = useTestCluster({ masters: 3 });
  const begin = () => (scenario = new ClusterScenario(ctx.cluster, SETTINGS));
  const CHILDREN = ['p1', 'p2', 'p3'];

  it('three `redsource process` children, SIGKILLed at random points under load and restarted under the same name', async () => {
    const s = begin();
    for (const name of CHILDREN) s.spawn(name);
    await s.waitForShares(CHILDREN, 20_000);
    const load = s.load({ seed: 21 });
    const r = prng(21);
    let kills = 0;
    const started = performance.now();
    while (performance.now() - started < 7_000) {
      await sleep(250 + r.int(500));
      const victim = CHILDREN[r.int(CHILDREN.length)] as string;
      await s.kill(victim, 'SIGKILL');
      kills++;
      await sleep(r.int(300));
      s.spawn(victim);
    }
    await load.stop();
    const outcome = await s.settle(30_000);
    console.log(`[kill-restart] ${kills} SIGKILLs in ${Math.round(performance.now() - started)} ms of load`);
    expect(kills).toBeGreaterThan(5);
    s.expectExactlyOnce('kill-restart', outcome);
  }, 90_000);

  it('one `redsource process` child killed for good: the living take its partitions over once its lease runs out, and drop it from the group', async () => {
    const s = begin();
    for (const name of CHILDREN) s.spawn(name);
    await s.waitForShares(CHILDREN, 20_000);
    const load = s.load({ seed: 22 });
    await sleep(1_500);
    await s.kill('p2', 'SIGKILL');
    const takeoverMs = await s.waitForShares(['p1', 'p3'], SETTINGS.leaseMs + 8_000);
    await sleep(1_000);
    await load.stop();
    const outcome = await s.settle(20_000);
    console.log(
      `[killed-for-good] p2's partitions held by p1 and p3 ${takeoverMs} ms after its SIGKILL (lease ${SETTINGS.leaseMs} ms)`,
    );
    s.expectExactlyOnce('killed-for-good', outcome);
    // Not before its leases ran out (it renewed them at most one round before it died).
    expect(takeoverMs).toBeGreaterThan(SETTINGS.leaseMs - 3 * SETTINGS.rebalanceIntervalMs);
    expect(await s.members()).toEqual(['p1', 'p3']);
  }, 90_000);

  it('every client connection dropped repeatedly on every master (CLIENT KILL TYPE normal)', async () => {
    const { cluster } = ctx;
    const s = begin();
    for (const name of ['a', 'b', 'c']) await s.start(name);
    const load = s.load({ seed: 23 });
    await s.waitForShares(['a', 'b', 'c'], 8_000);
    let rounds = 0;
    let dropped = 0;
    const started = performance.now();
    while (performance.now() - started < 6_000) {
      await sleep(100);
      dropped += await dropClients(cluster);
      rounds++;
    }
    await sleep(500);
    await load.stop();
    const outcome = await s.settle(20_000);
    console.log(
      `[client-kill] ${rounds} rounds of CLIENT KILL on the ${(await cluster.masters()).length} masters: ${dropped} connections dropped`,
    );
    // Each round drops at least the load's and every processor's connections to some master.
    expect(dropped).toBeGreaterThan(rounds * 3);
    s.expectExactlyOnce('client-kill', outcome);
  }, 60_000);
});

describe('faults on a 3-master Redis Cluster with AOF (appendfsync always): a master crashes', () => {
  const ctx = useTestCluster({ masters: 3, aof: true });

  it('SIGKILL and restart of a master serving a stream, then of one serving only snapshots, while processing', async () => {
    const { cluster } = ctx;
    const s = (scenario = new ClusterScenario(cluster, SETTINGS));
    // One master gives up the slots of the streams (with their cursors, totals, dead letters) and of
    // the group (leases, members): it serves only this scenario's snapshots. The keys do not exist yet.
    const placed = [s.streams.updates, s.streams.activity, s.streams.friends, keys.members(s.group)];
    const masters = await cluster.masters();
    const owners = await Promise.all(placed.map((k) => cluster.nodeForKey(k)));
    const snapshotOnly = [...masters].sort(
      (x, y) => owners.filter((o) => o === x).length - owners.filter((o) => o === y).length,
    )[0] as number;
    const others = masters.filter((p) => p !== snapshotOnly);
    for (const [i, key] of placed.entries()) {
      if (owners[i] === snapshotOnly) await cluster.moveSlot(cluster.slotOf(key), others[i % others.length] as number);
    }
    const streamMaster = await cluster.nodeForKey(s.streams.updates);

    await s.start('a');
    await s.start('b');
    const load = s.load({ seed: 24 });
    await s.waitForShares(['a', 'b'], 8_000);
    await sleep(1_000);
    // Everything of this scenario on the snapshot-only master is a snapshot.
    const onIt = await cluster.nodeClient(snapshotOnly).keys('*');
    expect(onIt.length).toBeGreaterThan(5);
    expect(onIt.filter((k) => !k.startsWith(s.keyPrefix))).toEqual([]);

    const crashes: string[] = [];
    for (const [what, port] of [
      [`master of ${s.streams.updates}`, streamMaster],
      ['snapshot-only master', snapshotOnly],
    ] as const) {
      const confirmedBefore = s.confirmed;
      const started = performance.now();
      await cluster.kill(port);
      await sleep(1_000);
      await cluster.restart(port);
      await cluster.waitStable();
      crashes.push(`${what} ${port} down and back in ${Math.round(performance.now() - started)} ms`);
      // The load goes on with the restarted master: XADDs are confirmed again.
      await sleep(1_500);
      expect(s.confirmed, s.logs()).toBeGreaterThan(confirmedBefore);
    }
    await load.stop();
    const outcome = await s.settle(30_000);
    console.log(`[master-restart] ${crashes.join('; ')}`);
    s.expectExactlyOnce('master-restart', outcome);
  }, 90_000);
});
