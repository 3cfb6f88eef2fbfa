/**
 * Partitioned processing under faults, end to end: `redsource process` children (the CLI, as
 * operators run it) with REDSOURCE_PARTITIONS=12, REDSOURCE_LEASE_MS=1500 and
 * REDSOURCE_REBALANCE_MS=200, on a test Redis, under a continuous load of raw XADDs (flat entries,
 * envelopes naming the user as a JSON number, 1% poison). The unit of ownership is one partition of
 * one stream: the group shares 3 streams x 12 partitions = 36 units. Processors join and leave
 * (SIGTERM: a graceful handover; SIGKILL: waited out for the lease), or freeze past their lease and wake up
 * (SIGSTOP/SIGCONT: a zombie). Afterwards: every entry appended is applied or dead-lettered exactly
 * once (the totals hash against the streams), no entry of the source streams is left after its
 * partition's cursor (none pending in the group), and every snapshot equals the reference fold (which depends on each user's order).
 *
 * How these were checked to fail (each change alone, reverted afterwards): with apply-batch.lua's
 * fence check removed, the zombie test fails: the thawed processor's batch in hand reaches the
 * script (8 entries counted as skipped: the successor had applied them) and no refusal is logged.
 * (Exactly-once itself still held then: the partition cursor skips what was applied; the fence is
 * what keeps the stale holder from writing at all.) With rebalance.lua renewing leases by PERSIST
 * instead of PEXPIRE (leases that never run out), the SIGKILLed processor's partitions are never
 * taken over and "join and leave" fails (1021 entries left unapplied, 21 snapshots behind).
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { afterEach, describe, expect, it } from 'vitest';
import {
  expectPartitionedExactlyOnce,
  holdings,
  keys,
  PartitionScenario,
  readFences,
  readUnitLeases,
  within,
  type Lease,
  type UnitLease,
} from '../support/partitions.ts';
import { useTestRedis } from '../support/redis.ts';

const ctx = useTestRedis();
let scenario: PartitionScenario | undefined;

afterEach(async () => {
  await scenario?.stopAll();
  scenario = undefined;
});

const SETTINGS = { partitions: 12, leaseMs: 1_500, rebalanceMs: 200 };
/** The unit of ownership is one partition of one stream: the scenario's 3 streams x 12 partitions. */
const UNITS = 3 * SETTINGS.partitions;

function begin(): PartitionScenario {
  scenario = new PartitionScenario(ctx.server, ctx.redis, SETTINGS);
  return scenario;
}

/** Every unit's lease (the streams sorted by name, partition 0 first), as the processors share them out. */
const unitLeases = (s: PartitionScenario) =>
  readUnitLeases(ctx.redis, s.group, Object.values(s.streams), SETTINGS.partitions);

/** Whether the leases of all units are held, by exactly `holders`, `share` units each. */
const sharedBy = (leases: readonly (Lease | undefined)[], holders: readonly string[], share: number) => {
  const by = holdings(leases);
  return (
    leases.every((l) => l !== undefined) &&
    by.size === holders.length &&
    holders.every((h) => by.get(h)?.length === share)
  );
};

async function expectSharedBy(
  s: PartitionScenario,
  holders: readonly string[],
  share: number,
  timeoutMs: number,
): Promise<void> {
  const done = await within(async () => sharedBy(await unitLeases(s), holders, share), timeoutMs, 50);
  const leases = await unitLeases(s);
  expect(done.ok, `want ${share} each for ${holders.join(', ')}; leases ${JSON.stringify(leases)}\n${s.logs()}`).toBe(
    true,
  );
}

/** JSON log lines of a consumer whose `msg` matches. */
const said = (s: PartitionScenario, consumer: string, msg: RegExp) =>
  s
    .output(consumer)
    .split('\n')
    .filter((line) => {
      try {
        return msg.test(String((JSON.parse(line) as { msg?: unknown }).msg));
      } catch {
        return false;
      }
    });

describe("partitions under faults: exactly once, in each user's order", () => {
  it('processors join and leave under load (SIGTERM hands over, SIGKILL is waited out for its lease)', async () => {
    const s = begin();
    s.start('p1');
    const load = s.load({ seed: 51, poisonRate: 0.01, chunk: 10, everyMs: 10 });
    try {
      await sleep(1_000);
      s.start('p2');
      await sleep(1_000);
      s.start('p3');
      await sleep(1_500);
      // On a loaded machine a CLI can take seconds to start: SIGTERM hands over once it has taken partitions.
      const p1Holds = await within(async () => said(s, 'p1', /partition taken/).length > 0, 30_000, 50);
      expect(p1Holds.ok, s.output('p1').slice(-2_000)).toBe(true);
      expect(await s.signal('p1', 'SIGTERM')).toBe(0);
      await sleep(1_000);
      s.start('p4');
      await sleep(1_000);
      await s.signal('p2', 'SIGKILL');
      await sleep(1_000);
      s.start('p5');
      await sleep(1_500);
      expect(await s.signal('p3', 'SIGTERM')).toBe(0);
      await sleep(500);
    } finally {
      await load.stop();
    }
    const outcome = await s.settle(30_000);
    expectPartitionedExactlyOnce('join-leave', s, outcome);
    // The graceful ones gave their partitions back on the way out.
    for (const consumer of ['p1', 'p3'])
      expect(said(s, consumer, /partitions handed over/), s.output(consumer).slice(-2_000)).toHaveLength(1);
    // The survivors end with fair shares; the dead ones hold nothing.
    await expectSharedBy(s, ['p4', 'p5'], UNITS / 2, 5_000);
    expect(outcome.applied).toBeGreaterThan(3_000);
  }, 60_000);

  it('a processor SIGSTOPped past its lease is replaced, and once SIGCONTed finds its partitions taken and applies nothing of them', async () => {
    const s = begin();
    for (const consumer of ['p1', 'p2', 'p3']) s.start(consumer);
    const load = s.load({ seed: 52, poisonRate: 0.01, chunk: 10, everyMs: 10 });
    let replacedMs = 0;
    try {
      await expectSharedBy(s, ['p1', 'p2', 'p3'], UNITS / 3, 10_000);
      await sleep(1_000);
      const before = await unitLeases(s);
      const frozen = holdings(before).get('p2') ?? [];
      const fencesBefore = await readFences(ctx.redis, s.group, SETTINGS.partitions);

      await s.signal('p2', 'SIGSTOP');
      const replaced = await within(
        async () => sharedBy(await unitLeases(s), ['p1', 'p3'], UNITS / 2),
        SETTINGS.leaseMs + 5_000,
        20,
      );
      replacedMs = replaced.ms;
      expect(replaced.ok, s.logs()).toBe(true);
      // Not before its lease ran out (it renewed at most one round before freezing).
      expect(replaced.ms).toBeGreaterThan(SETTINGS.leaseMs - SETTINGS.rebalanceMs - 300);
      // Its units (a partition of a stream), and only they, went to the others under new fencing
      // tokens: every other unit is still held by its holder under the same token.
      const after = await unitLeases(s);
      const fencesAfter = await readFences(ctx.redis, s.group, SETTINGS.partitions);
      expect(frozen.length).toBe(UNITS / 3);
      for (const [u, lease] of after.entries()) {
        const was = before[u] as UnitLease;
        const unit = `${was.stream}:${was.partition}`;
        if (frozen.includes(u)) {
          expect(lease?.holder, unit).not.toBe('p2');
          expect(Number(lease?.token), unit).toBeGreaterThan(Number(was.token));
        } else expect(lease, unit).toEqual(was);
      }
      // A partition's fencing counter is shared by the streams' partitions of that number: it grew by
      // one for each frozen unit of that partition taken over (each taken once), and not otherwise.
      for (let p = 0; p < SETTINGS.partitions; p++) {
        const taken = frozen.filter((u) => before[u]?.partition === p).length;
        expect(fencesAfter[p], `partition ${p}`).toBe((fencesBefore[p] as number) + taken);
      }
      // Each successor claimed its unit: the epoch of that stream's partition is its token now, so
      // whatever the frozen one sends for it is refused.
      const claimed = await within(
        async () => {
          const epochs = await ctx.redis.mget(
            ...frozen.map((u) =>
              keys.epoch((after[u] as UnitLease).stream, s.group, (after[u] as UnitLease).partition),
            ),
          );
          return frozen.every((u, i) => epochs[i] === (after[u] as UnitLease).token);
        },
        5_000,
        50,
      );
      expect(claimed.ok, s.logs()).toBe(true);
      // The others apply the frozen one's partitions for a while, then it wakes up mid-load.
      await sleep(700);
      await s.signal('p2', 'SIGCONT');
      const noticed = await within(
        () => said(s, 'p2', /partition lease lost|claimed by another processor/).length > 0,
        5_000,
        50,
      );
      expect(noticed.ok, s.output('p2').slice(-3_000)).toBe(true);
      await sleep(1_500);
    } finally {
      await load.stop();
    }
    const refusedLines = said(s, 'p2', /claimed by another processor/).length;
    console.log(
      `[zombie] replaced after ${Math.round(replacedMs)} ms; p2 said: ${said(s, 'p2', /lease lost/).length} lease-lost and ${refusedLines} refused lines`,
    );
    const outcome = await s.settle(30_000);
    expectPartitionedExactlyOnce('zombie', s, outcome);
    // A batch in hand when it froze (a read answered while it was stopped) was refused by the
    // fence, not applied: had it gone through, its entries (applied meanwhile by the successor)
    // would show as skipped. Whether it had one, or its ownership round answered first (then it
    // drops the partitions and the read's entries with them), depends on timing: with reads
    // blocking 100 ms under a load every 10 ms, one run in two or so (refused lines above).
    expect(outcome.skipped).toBe(0);
    // Thawed, it rejoined the group and got a fair share again.
    await expectSharedBy(s, ['p1', 'p2', 'p3'], UNITS / 3, 5_000);
  }, 60_000);
});
