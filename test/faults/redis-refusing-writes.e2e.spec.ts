import { setTimeout as sleep } from 'node:timers/promises';
import { afterEach, describe, expect, it } from 'vitest';
import type { Redis } from 'ioredis';
import { expectExactOnce, FaultScenario } from '../support/fault-driver.ts';
import { startTestRedis, useTestRedis, type TestRedis } from '../support/redis.ts';

/**
 * Redis refusing writes for a while under load (its script cache flushed, the node read-only): the
 * processors wait and retry, and nothing is blamed on the entries. REDSOURCE_MAX_DELIVERIES is 1
 * here, so a single redelivery counted against a valid entry would dead-letter it.
 */
const ctx = useTestRedis();
let scenario: FaultScenario | undefined;

afterEach(async () => {
  await scenario?.stopAll();
  scenario = undefined;
});

class OneAttempt extends FaultScenario {
  override env(consumer: string): Record<string, string> {
    return { ...super.env(consumer), REDSOURCE_MAX_DELIVERIES: '1' };
  }
}

const EVENTS = 12_000;

function begin(): FaultScenario {
  scenario = new OneAttempt(ctx.server, ctx.redis);
  for (const consumer of ['p1', 'p2', 'p3']) scenario.start(consumer);
  return scenario;
}

describe("Redis refusing writes is never the entry's fault", () => {
  it('SCRIPT FLUSH every 100 ms under load (NOSCRIPT)', async () => {
    const s = begin();
    const flusher = ctx.server.client();
    let appending = true;
    let flushes = 0;
    const chaos = (async () => {
      while (appending) {
        await sleep(100);
        await flusher.script('FLUSH').then(
          () => flushes++,
          () => undefined,
        );
      }
    })();
    await s.append(EVENTS, { seed: 31, poisonRate: 0.01, spreadMs: 5_000, chunk: 200 });
    appending = false;
    await chaos;
    const outcome = await s.settle(30_000);
    console.log(`[script-flush] ${flushes} flushes`);
    expect(flushes).toBeGreaterThan(20);
    expectExactOnce('script-flush', s, outcome, EVENTS);
  }, 60_000);

  it('the node turned read-only (a replica of its copy) for a few seconds under load (READONLY)', async (t) => {
    if (!ctx.server.owned) t.skip();
    const s = begin();
    const twin = await startTestRedis();
    const primary = ctx.server.client();
    const copy = twin.client();
    let readOnlyFor = 0;
    try {
      await copy.replicaof('127.0.0.1', port(ctx.server));
      expect(await until(async () => (await info(copy, 'replication'))['master_link_status'] === 'up', 10_000)).toBe(
        true,
      );
      // A backlog in hand when the node turns read-only, and appends going on meanwhile.
      await s.append(EVENTS, { seed: 32, poisonRate: 0.01, spreadMs: 0, chunk: 1_000 });
      const appending = s.append(3_000, { seed: 33, poisonRate: 0.01, spreadMs: 6_000, chunk: 100 });
      // Swap roles with nothing lost: pause writes, let the copy catch up, promote it, make the
      // primary its replica (a partial resync: same data), hold, then promote the primary back.
      await primary.call('CLIENT', 'PAUSE', '10000', 'WRITE');
      const offset = (await info(primary, 'replication'))['master_repl_offset'];
      expect(await until(async () => (await info(copy, 'replication'))['slave_repl_offset'] === offset, 5_000)).toBe(
        true,
      );
      await copy.replicaof('NO', 'ONE');
      await primary.replicaof('127.0.0.1', port(twin));
      await primary.call('CLIENT', 'UNPAUSE');
      // Appends keep arriving throughout, so the processors hold batches when the node turns read-only;
      // how much of the backlog is left by then depends on the machine's speed, not on the code.
      expect(
        await s.unprocessed(),
        'the node must turn read-only while the backlog is being processed',
      ).toBeGreaterThan(0);
      const readOnlySince = Date.now();
      expect(await until(async () => (await info(primary, 'replication'))['master_link_status'] === 'up', 10_000)).toBe(
        true,
      );
      await sleep(3_000);
      await primary.replicaof('NO', 'ONE');
      readOnlyFor = Date.now() - readOnlySince;
      await appending;
    } finally {
      await primary.replicaof('NO', 'ONE').catch(() => undefined);
      await twin.close();
    }
    const writable = Date.now();
    const outcome = await s.settle(30_000);
    console.log(
      `[readonly] read-only for ${readOnlyFor} ms, ${s.appendFailures} appends refused, settled ${Date.now() - writable} ms after the appends ended`,
    );
    expect(s.appendFailures, 'the appender must have met READONLY too').toBeGreaterThan(0);
    expectExactOnce('readonly', s, outcome, EVENTS);
  }, 60_000);
});

const port = (server: TestRedis) => Number(new URL(server.url).port);

async function info(redis: Redis, section: string): Promise<Record<string, string>> {
  const text = await redis.info(section);
  return Object.fromEntries(
    text
      .split('\r\n')
      .filter((l) => l.includes(':'))
      .map((l) => [l.slice(0, l.indexOf(':')), l.slice(l.indexOf(':') + 1)]),
  );
}

async function until(check: () => Promise<boolean>, timeoutMs: number): Promise<boolean> {
  const end = Date.now() + timeoutMs;
  while (Date.now() < end) {
    if (await check().catch(() => false)) return true;
    await sleep(25);
  }
  return false;
}
