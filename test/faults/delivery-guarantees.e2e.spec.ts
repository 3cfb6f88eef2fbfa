import { setTimeout as sleep } from 'node:timers/promises';
import { afterEach, describe, expect, it } from 'vitest';
import { useTestRedis } from '../support/redis.ts';
import { expectExactOnce, FaultScenario } from '../support/fault-driver.ts';
import { prng } from '../support/model.ts';

/**
 * The guarantee under faults: every appended entry is reflected in its snapshot exactly once, in
 * stream order per user (or dead-lettered if it cannot be applied), whatever fails. Each case runs
 * three `redsource process` children in one group while events are appended, injects its fault,
 * lets the system settle, and compares every snapshot with the pure fold of the streams.
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

  it('one processor killed for good: the living claim its pending entries and drop it from the group', async () => {
    const s = begin();
    const appending = s.append(EVENTS, { seed: 12, poisonRate: 0.01, spreadMs: 4_000 });
    await sleep(1_500);
    await s.kill('p2', 'SIGKILL');
    await appending;
    const outcome = await s.settle(60_000);
    expectExactOnce('killed-forever', s, outcome, EVENTS);
    const consumers = async () => ((await ctx.redis.xinfo('CONSUMERS', s.streams.activity, s.group)) as unknown[][]).map((c) => String(c[1]));
    const end = Date.now() + 15_000;
    while ((await consumers()).includes('p2') && Date.now() < end) await sleep(200);
    expect(await consumers()).not.toContain('p2');
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
