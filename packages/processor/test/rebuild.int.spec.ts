import { describe, expect, it } from 'vitest';
import { rebuildState, replay } from '@redsource/processor';
import { eventually, useTestRedis } from '../../../test/support/redis.ts';
import { isolatedProfileSetup } from '../../../test/support/profile-setup.ts';
import {
  prng,
  randomCommands,
  referenceFold,
  snapshotDifferences,
  xaddAll,
  type RawCommand,
} from '../../../test/support/model.ts';

const ctx = useTestRedis();

async function settledSetup(events: number, seed: number) {
  const setup = isolatedProfileSetup(ctx.redis);
  await xaddAll(ctx.redis, randomCommands(setup.streams, events, 50, seed));
  const processor = setup.processor(ctx.server.client(), { gapFillAfterMs: 200 });
  ctx.track(processor);
  await processor.start();
  const settled = async () =>
    (await snapshotDifferences(setup.snapshots, await referenceFold(setup.eventStore, setup.streams))).length === 0;
  expect(await eventually(settled, 20_000)).toBe(true);
  return { ...setup, settled };
}

/** Activity and friend events only: they never change whether a profile is visible. */
function visibilityKeepingCommands(
  setup: ReturnType<typeof isolatedProfileSetup>,
  count: number,
  seed: number,
): RawCommand[] {
  const r = prng(seed);
  return Array.from({ length: count }, (_, i): RawCommand =>
    r.next() < 0.6
      ? [
          setup.streams.activity,
          'user_id',
          String(1 + r.int(50)),
          'command',
          r.pick(['like', 'unlike', 'kick']),
          'object',
          r.pick(['p1', 'p2', 'p3']),
        ]
      : [
          setup.streams.friends,
          'user_id',
          String(1 + r.int(50)),
          'command',
          r.pick(['add', 'remove']),
          'friend_id',
          String(100 + (i % 7)),
        ],
  );
}

describe('replay: a rebuild with no downtime', () => {
  it('keeps serving every existing profile, never half-built, while events keep arriving, and ends equal to the fold', async () => {
    const setup = await settledSetup(3_000, 21);
    const ids = Array.from({ length: 50 }, (_, i) => String(i + 1));
    const visible = new Set((await setup.snapshots.readMany(ids)).flatMap((s) => (s?.exists ? [s.id] : [])));
    expect(visible.size).toBeGreaterThan(10);

    // Readers: a visible profile must never disappear, and its activity total never go backwards
    // (a half-built snapshot would show fewer events than the live one did).
    let reading = true;
    let reads = 0;
    const problems: string[] = [];
    const lastTotal = new Map<string, number>();
    const readers = (async () => {
      while (reading) {
        const snapshots = await setup.snapshots.readMany([...visible]);
        snapshots.forEach((snapshot, i) => {
          const id = [...visible][i] as string;
          if (!snapshot?.exists) problems.push(`user ${id} not visible during the rebuild`);
          const total = Object.values(snapshot?.counters ?? {}).reduce((a, b) => a + b, 0);
          if (total < (lastTotal.get(id) ?? 0))
            problems.push(`user ${id} went back from ${lastTotal.get(id)} to ${total} events`);
          lastTotal.set(id, total);
        });
        reads++;
      }
    })();
    const appending = xaddAll(ctx.redis, visibilityKeepingCommands(setup, 1_500, 22), 25);
    const phases = new Set<string>();
    const result = await replay({
      redis: ctx.redis,
      eventStore: setup.eventStore,
      snapshots: setup.snapshots,
      handlers: setup.handlers,
      pageSize: 50,
      onProgress: (p) => phases.add(p.phase),
    });
    await appending;
    expect(await eventually(setup.settled, 20_000)).toBe(true);
    reading = false;
    await readers;

    expect(problems.slice(0, 5)).toEqual([]);
    expect(reads).toBeGreaterThan(10);
    expect([...phases]).toEqual(['building', 'catching-up', 'switching', 'done']);
    expect(result.switched).toBeGreaterThanOrEqual(visible.size);
    expect(await rebuildState(ctx.redis, setup.snapshots)).toBeUndefined();
    expect(await setup.snapshots.isHeld(setup.streams.updates)).toBe(false);
  });

  it('resumes an interrupted rebuild from where it stopped', async () => {
    const setup = await settledSetup(1_500, 23);
    let pages = 0;
    const interrupted = replay({
      redis: ctx.redis,
      eventStore: setup.eventStore,
      snapshots: setup.snapshots,
      handlers: setup.handlers,
      pageSize: 100,
      onProgress: (p) => {
        if (p.phase === 'building' && ++pages === 5) throw new Error('crash');
      },
    });
    await expect(interrupted).rejects.toThrow('crash');
    const state = await rebuildState(ctx.redis, setup.snapshots);
    expect(state?.phase).toBe('building');
    expect(state?.done).toBeGreaterThan(0);

    const done: number[] = [];
    const result = await replay({
      redis: ctx.redis,
      eventStore: setup.eventStore,
      snapshots: setup.snapshots,
      handlers: setup.handlers,
      pageSize: 100,
      onProgress: (p) => done.push(p.done),
    });
    // It starts from the shadow's cursor, not from zero.
    expect(done[0]).toBeGreaterThanOrEqual(400);
    expect(result.done).toBe(1_500);
    expect(await eventually(setup.settled)).toBe(true);
  });

  it('rebuilds only the users asked for, leaving the others untouched', async () => {
    const setup = await settledSetup(1_000, 24);
    const key = (id: string) => setup.snapshots.key(id);
    // Corrupt two snapshots: only the one asked for is repaired.
    await ctx.redis.hset(key('1'), 'c:bogus', '99');
    await ctx.redis.hset(key('2'), 'c:bogus', '99');
    await replay({
      redis: ctx.redis,
      eventStore: setup.eventStore,
      snapshots: setup.snapshots,
      handlers: setup.handlers,
      only: ['1'],
    });
    expect(await ctx.redis.hget(key('1'), 'c:bogus')).toBeNull();
    expect(await ctx.redis.hget(key('2'), 'c:bogus')).toBe('99');
  });
});
