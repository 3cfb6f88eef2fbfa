import { setTimeout as sleep } from 'node:timers/promises';
import { afterEach, describe, expect, it } from 'vitest';
import { eventually, useTestRedis } from '../support/redis.ts';
import { expectExactOnce, FaultScenario } from '../support/fault-driver.ts';
import { prng } from '../support/model.ts';

/**
 * The guarantee under faults: every appended entry is reflected in its snapshot exactly once, in
 * stream order per user (or dead-lettered if it cannot be applied), whatever fails. Each case runs
 * three `redsource process` children in one group (sharing 12 partitions of each of the 3 streams:
 * a lease covers one partition of one stream, and lasts 1.5 s) while
 * events are appended, injects its fault, lets the system settle, and compares every snapshot with
 * the pure fold of the streams.
 */
const ctx = useTestRedis({ aof: true });
let scenario: FaultScenario | undefined;

afterEach(async () => {
  await scenario?.stopAll();
  scenario = undefined;
});

const CONSUMERS = ['p1', 'p2', 'p3'];
const EVENTS = 4_000;

function begin(): FaultScenario {
  scenario = new FaultScenario(ctx.server, ctx.redis);
  for (const consumer of CONSUMERS) scenario.start(consumer);
  return scenario;
}

describe('exactly-once effects in per-user stream order under faults', () => {
  it('three processors, one SIGKILLed at random points and restarted under the same name', async () => {
    const s = begin();
    const r = prng(11);
    let appending = true;
    let kills = 0;
    const chaos = (async () => {
      while (appending) {
        await sleep(250 + r.int(500));
        const victim = CONSUMERS[r.int(CONSUMERS.length)] as string;
        await s.kill(victim, 'SIGKILL');
        kills++;
        await sleep(r.int(300));
        s.start(victim);
      }
    })();
    await s.append(EVENTS, { seed: 11, poisonRate: 0.01, spreadMs: 6_000 });
    appending = false;
    await chaos;
    const outcome = await s.settle(60_000);
    console.log(`[kill-restart] ${kills} SIGKILLs`);
    expect(kills).toBeGreaterThan(3);
    expectExactOnce('kill-restart', s, outcome, EVENTS);
  }, 120_000);

  it('one processor killed for good: the living take its partitions over once its lease runs out, and drop it from the group', async () => {
    const s = begin();
    const appending = s.append(EVENTS, { seed: 12, poisonRate: 0.01, spreadMs: 4_000 });
    // Once p2 has its share and works on it.
    expect(await eventually(async () => (await s.leaseHolders()).includes('p2'), 20_000, 100), s.logs()).toBe(true);
    await sleep(500);
    await s.kill('p2', 'SIGKILL');
    await appending;
    const outcome = await s.settle(60_000);
    expectExactOnce('killed-forever', s, outcome, EVENTS);
    // Out of the group, and each of its partitions (of every stream) held by one of the living.
    expect(await eventually(async () => (await s.members()).join() === 'p1,p3', 15_000, 200)).toBe(true);
    expect(
      await eventually(async () => (await s.leaseHolders()).every((h) => h === 'p1' || h === 'p3'), 5_000, 200),
    ).toBe(true);
  }, 120_000);

  it('one processor frozen (SIGSTOP) past its lease, thawed after the others took its partitions over: nothing applied twice', async () => {
    const s = begin();
    const appending = s.append(EVENTS, { seed: 17, poisonRate: 0.01, spreadMs: 5_000 });
    // Once p2 has its share and works on it.
    expect(await eventually(async () => (await s.leaseHolders()).includes('p2'), 20_000, 100), s.logs()).toBe(true);
    await sleep(500);
    const frozen = s.processes.get('p2')?.child;
    frozen?.kill('SIGSTOP');
    let takenOver = false;
    try {
      // Its lease runs out (1.5 s) and the others share its partitions; whatever it held in hand it may send when thawed.
      takenOver = await eventually(async () => !(await s.leaseHolders()).includes('p2'), 10_000, 100);
      await sleep(300);
    } finally {
      frozen?.kill('SIGCONT');
    }
    expect(takenOver, s.logs()).toBe(true);
    await appending;
    const outcome = await s.settle(60_000);
    console.log(
      `[frozen] p2 thawed: ${/claimed by another processor/.test(s.processes.get('p2')?.output() ?? '') ? 'a stale batch was refused' : 'no batch was in hand'}`,
    );
    expectExactOnce('frozen', s, outcome, EVENTS);
    // Thawed, it is a member again and gets its share back.
    expect(await eventually(async () => (await s.leaseHolders()).includes('p2'), 10_000, 200)).toBe(true);
  }, 120_000);

  it('Redis killed and restarted mid-stream (AOF, appendfsync always)', async () => {
    const s = begin();
    const appending = s.append(EVENTS, { seed: 13, poisonRate: 0.01, spreadMs: 5_000 });
    await sleep(2_000);
    await ctx.server.stop('SIGKILL');
    await sleep(1_000);
    await ctx.server.restart();
    await appending;
    const outcome = await s.settle(60_000);
    expectExactOnce('redis-restart', s, outcome, EVENTS);
  }, 120_000);

  it('every client connection dropped repeatedly (CLIENT KILL)', async () => {
    const s = begin();
    const killer = ctx.server.client();
    let appending = true;
    let drops = 0;
    const chaos = (async () => {
      while (appending) {
        await sleep(300);
        drops += Number(await killer.client('KILL', 'TYPE', 'normal', 'SKIPME', 'yes').catch(() => 0));
      }
    })();
    await s.append(EVENTS, { seed: 14, poisonRate: 0.01, spreadMs: 5_000 });
    appending = false;
    await chaos;
    const outcome = await s.settle(60_000);
    console.log(`[client-kill] ${drops} connections dropped`);
    expect(drops).toBeGreaterThan(5);
    expectExactOnce('client-kill', s, outcome, EVENTS);
  }, 120_000);

  it('poison entries mixed in end in the dead-letter stream, counted, and everything else flows', async () => {
    const s = begin();
    await s.append(EVENTS, { seed: 15, poisonRate: 0.1, spreadMs: 2_000 });
    const outcome = await s.settle(60_000);
    expect(outcome.undecodable).toBeGreaterThan(EVENTS * 0.05);
    expectExactOnce('poison', s, outcome, EVENTS);
  }, 120_000);

  it('SIGTERM while batches are in flight loses nothing and applies nothing twice', async () => {
    const s = begin();
    const r = prng(16);
    let appending = true;
    let stops = 0;
    const chaos = (async () => {
      while (appending) {
        await sleep(300 + r.int(400));
        const victim = CONSUMERS[r.int(CONSUMERS.length)] as string;
        await s.kill(victim, 'SIGTERM');
        stops++;
        s.start(victim);
      }
    })();
    await s.append(EVENTS, { seed: 16, poisonRate: 0.01, spreadMs: 5_000 });
    appending = false;
    await chaos;
    const outcome = await s.settle(60_000);
    expectExactOnce('sigterm', s, outcome, EVENTS);
    expect(stops).toBeGreaterThan(3);
  }, 120_000);
});
