import { setTimeout as sleep } from 'node:timers/promises';
import { afterEach, describe, expect, it } from 'vitest';
import { RedisEventStore } from '@redsource/event-store';
import { processorKeys, rebuildState } from '@redsource/processor';
import { SnapshotStore } from '@redsource/snapshot-store';
import { profileCatalog } from '../../apps/profile-api/src/domain/events.ts';
import { runCli, type CliProcess } from '../support/cli.ts';
import { FaultScenario } from '../support/fault-driver.ts';
import { referenceFold, snapshotDifferences } from '../support/model.ts';
import { cursorsAtEnd } from '../support/backlog.ts';
import { eventually, useTestRedis } from '../support/redis.ts';

/**
 * `redsource replay` run twice at once (issue 9: both exited 0 and 383 of 4,077 profiles were gone),
 * and a replay frozen with SIGSTOP past its lease, while two `redsource process` children run and
 * events are appended. Every profile must equal the pure fold of the streams at the end.
 */
const ctx = useTestRedis();
let scenario: FaultScenario | undefined;
const replays: CliProcess[] = [];

afterEach(async () => {
  for (const r of replays.splice(0)) {
    if (r.child.exitCode === null && r.child.signalCode === null) {
      r.child.kill('SIGCONT');
      r.child.kill('SIGKILL');
      await r.exited;
    }
  }
  await scenario?.stopAll();
  scenario = undefined;
});

function begin(): FaultScenario {
  scenario = new FaultScenario(ctx.server, ctx.redis);
  scenario.start('p1');
  scenario.start('p2');
  return scenario;
}

function startReplay(s: FaultScenario, args: string[] = [], env: Record<string, string> = {}): CliProcess {
  const cli = runCli(['replay', ...args], { ...s.env('replay'), LOG_LEVEL: 'warn', ...env });
  replays.push(cli);
  return cli;
}

/** Waits until the processors have applied everything and every profile equals the fold; returns the differences left. */
async function settledDifferences(s: FaultScenario): Promise<string[]> {
  const snapshots = new SnapshotStore({ redis: ctx.redis, keyPrefix: s.keyPrefix, projection: 'profiles' });
  const eventStore = new RedisEventStore({ redis: ctx.redis, catalog: profileCatalog(s.streams) });
  const differences = async () => snapshotDifferences(snapshots, await referenceFold(eventStore, s.streams));
  await eventually(async () => (await differences()).length === 0, 30_000, 200);
  return differences();
}

/** Every key a rebuild or processor could write, with its value (the group's keys left out: heartbeats and consumer stats tick). */
async function fingerprint(): Promise<Map<string, string>> {
  const values = new Map<string, string>();
  let cursor = '0';
  do {
    const [next, keys] = await ctx.redis.scan(cursor, 'COUNT', 1_000);
    cursor = next;
    for (const key of keys) {
      if (key.startsWith('redsource:group:') || key.startsWith('redsource:{group:')) continue;
      const type = await ctx.redis.type(key);
      const value =
        type === 'hash'
          ? JSON.stringify(Object.entries(await ctx.redis.hgetall(key)).sort())
          : type === 'string'
            ? String(await ctx.redis.get(key))
            : type === 'set'
              ? JSON.stringify((await ctx.redis.smembers(key)).sort())
              : type === 'stream'
                ? `${await ctx.redis.xlen(key)} ${JSON.stringify(await ctx.redis.xrevrange(key, '+', '-', 'COUNT', 1))}`
                : type;
      values.set(key, value);
    }
  } while (cursor !== '0');
  return values;
}

const rebuildOf = (s: FaultScenario) => ({ projection: 'profiles', keyPrefix: s.keyPrefix });

describe('concurrent rebuilds', () => {
  it('a second `redsource replay` exits non-zero at once with one line naming the running one; `--wait` runs after it', async () => {
    const s = begin();
    await s.append(20_000, { seed: 41, poisonRate: 0.005, spreadMs: 1_000, chunk: 500 });
    const appending = s.append(2_000, { seed: 42, poisonRate: 0.005, spreadMs: 6_000, chunk: 50 });
    // A lease longer than the default 10 s: on a loaded machine the next two replays take seconds to start.
    const first = startReplay(s, [], { REDSOURCE_REBUILD_LEASE_MS: '30000' });
    expect(
      await eventually(async () => (await rebuildState(ctx.redis, rebuildOf(s)))?.phase !== undefined, 15_000, 5),
    ).toBe(true);
    // Paused well within its lease: it is still the running rebuild while the others start.
    first.child.kill('SIGSTOP');
    try {
      const second = startReplay(s);
      const askedAt = Date.now();
      const code = await second.exited;
      console.log(
        `[second replay] exit ${code} after ${Date.now() - askedAt} ms (process start included): ${second.output().trim()}`,
      );
      const lines = second.output().trim().split('\n');
      expect(code, second.output()).not.toBe(0);
      expect(lines, second.output()).toHaveLength(1);
      expect(lines[0]).toMatch(
        new RegExp(`RS_REBUILD_RUNNING.*host [^,]+, pid ${first.child.pid}, started [^,]+, phase \\S+`),
      );

      const waiting = startReplay(s, ['--wait']);
      expect(await eventually(async () => waiting.output().includes('waiting'), 15_000, 50), waiting.output()).toBe(
        true,
      );
      expect(waiting.child.exitCode).toBeNull();
      first.child.kill('SIGCONT');
      expect(await first.exited, first.output()).toBe(0);
      expect(await waiting.exited, waiting.output()).toBe(0);
      expect(waiting.output()).toMatch(/switched \d+ snapshots/);
    } finally {
      first.child.kill('SIGCONT');
    }
    await appending;
    expect(await settledDifferences(s), s.logs()).toEqual([]);
  }, 60_000);

  it('a replay frozen past its lease is taken over; resumed, it writes nothing and exits non-zero; every profile equals the fold', async () => {
    const s = begin();
    const lease = { REDSOURCE_REBUILD_LEASE_MS: '1500', REDSOURCE_REBUILD_RENEW_MS: '300' };
    await s.append(30_000, { seed: 43, poisonRate: 0.005, spreadMs: 1_000, chunk: 500 });
    let appending = s.append(1_000, { seed: 44, poisonRate: 0.005, spreadMs: 3_000, chunk: 50 });
    const frozen = startReplay(s, [], lease);
    expect(
      await eventually(async () => (await rebuildState(ctx.redis, rebuildOf(s)))?.phase === 'building', 15_000, 2),
    ).toBe(true);
    frozen.child.kill('SIGSTOP');
    try {
      await sleep(2_500);
      const takeover = startReplay(s, [], lease);
      expect(await takeover.exited, takeover.output()).toBe(0);
      await appending;
      appending = s.append(500, { seed: 45, poisonRate: 0, spreadMs: 500, chunk: 50 });
      await appending;
      expect(await settledDifferences(s), s.logs()).toEqual([]);
      expect(await ctx.redis.exists(processorKeys.rebuildLease('profiles', s.keyPrefix))).toBe(0);
      // The processors write their idle partitions' cursors once a read finds nothing new: let them, before the fingerprint.
      const snapshots = new SnapshotStore({ redis: ctx.redis, keyPrefix: s.keyPrefix, projection: 'profiles' });
      expect(
        await eventually(
          () => cursorsAtEnd(ctx.redis, snapshots, [s.streams.updates, s.streams.activity, s.streams.friends], 12),
          10_000,
        ),
      ).toBe(true);

      const before = await fingerprint();
      frozen.child.kill('SIGCONT');
      const code = await frozen.exited;
      console.log(`[frozen replay] exit ${code}: ${frozen.output().trim().split('\n').slice(-2).join(' | ')}`);
      expect(code, frozen.output()).not.toBe(0);
      expect(frozen.output()).toContain('RS_REBUILD_LEASE_LOST');
      await sleep(500);
      const after = await fingerprint();
      const changed = [...new Set([...before.keys(), ...after.keys()])].filter((k) => before.get(k) !== after.get(k));
      expect(changed).toEqual([]);
    } finally {
      frozen.child.kill('SIGCONT');
    }
    expect(await settledDifferences(s), s.logs()).toEqual([]);
  }, 60_000);
});
