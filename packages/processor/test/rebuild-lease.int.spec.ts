import { setTimeout as sleep } from 'node:timers/promises';
import { hostname } from 'node:os';
import { describe, expect, it } from 'vitest';
import {
  HandlerRegistry,
  processorKeys,
  rebuildState,
  RebuildLeaseLostError,
  RebuildRunningError,
  replay,
  type ReplayOptions,
} from '@redsource/processor';
import { snapshotKeys } from '@redsource/snapshot-store';
import { eventually, useTestRedis } from '../../../test/support/redis.ts';
import { isolatedProfileSetup } from '../../../test/support/profile-setup.ts';
import { randomCommands, referenceFold, snapshotDifferences, xaddAll } from '../../../test/support/model.ts';
import { rejection } from '../../../test/support/rejection.ts';

/**
 * At most one rebuild of a projection runs at a time. Two rebuilds at once used to share one state
 * and rebuild id and destroy profiles (issue 9); now the second fails at once naming the first, or
 * waits for it, and a rebuild that lost its lease writes nothing more.
 */
const ctx = useTestRedis();

async function runningSetup(events: number, seed: number) {
  const setup = isolatedProfileSetup(ctx.redis);
  await xaddAll(ctx.redis, randomCommands(setup.streams, events, 50, seed));
  const processor = ctx.track(setup.processor(ctx.server.client(), { gapFillAfterMs: 200 }));
  await processor.start();
  const settled = async () =>
    (await snapshotDifferences(setup.snapshots, await referenceFold(setup.eventStore, setup.streams))).length === 0;
  expect(await eventually(settled, 20_000)).toBe(true);
  const options = (extra: Partial<ReplayOptions> = {}): ReplayOptions => ({
    redis: ctx.redis,
    eventStore: setup.eventStore,
    snapshots: setup.snapshots,
    // A slow fold (25 ms every 50 events) makes the rebuild last a few seconds, so the two overlap.
    handlers: slowed(setup.handlers, 50, 25),
    pageSize: 50,
    ...extra,
  });
  return { ...setup, settled, options };
}

/** The same handlers, pausing `ms` every `everyNth` events: a rebuild long enough to overlap another. */
function slowed(handlers: HandlerRegistry, everyNth: number, ms: number): HandlerRegistry {
  let calls = 0;
  const slow = Object.create(handlers) as HandlerRegistry;
  slow.run = (event) => {
    const changes = handlers.run(event);
    return ++calls % everyNth === 0 ? sleep(ms).then(() => changes) : changes;
  };
  return slow;
}

describe('replay: one rebuild of a projection at a time', () => {
  it('a second replay 0.5 s after the first fails at once naming it (host, pid, start, phase); every profile equals the fold', async () => {
    const setup = await runningSetup(3_000, 31);
    const appending = xaddAll(ctx.redis, randomCommands(setup.streams, 1_500, 50, 32), 25);
    const first = replay(setup.options());
    await sleep(500);
    const askedAt = Date.now();
    const error = await rejection(replay(setup.options()));
    expect(Date.now() - askedAt).toBeLessThan(1_000);
    expect(error).toBeInstanceOf(RebuildRunningError);
    expect((error as RebuildRunningError).code).toBe('RS_REBUILD_RUNNING');
    expect((error as Error).message).not.toContain('\n');
    expect((error as Error).message).toMatch(
      new RegExp(
        `host ${hostname()}, pid ${process.pid}, started \\d{4}-\\d\\d-\\d\\dT[^,]+, phase (building|catching-up)`,
      ),
    );

    const result = await first;
    await appending;
    expect(result.phase).toBe('done');
    expect(await eventually(setup.settled, 20_000)).toBe(true);
    expect(await rebuildState(ctx.redis, setup.snapshots)).toBeUndefined();
  });

  it('a second replay 2 s after the first waits for it (wait: true) and then rebuilds; every profile equals the fold', async () => {
    const setup = await runningSetup(3_000, 33);
    const appending = xaddAll(ctx.redis, randomCommands(setup.streams, 1_500, 50, 34), 25);
    const finished: string[] = [];
    const first = replay(setup.options()).then((p) => (finished.push('first'), p));
    await sleep(2_000);
    const waitedFor: string[] = [];
    const second = replay(
      setup.options({
        wait: true,
        lease: { waitPollMs: 100 },
        onWaiting: (running) => waitedFor.push(`${running.host}/${running.pid}/${running.phase}`),
        onProgress: () => {
          if (finished.length === 0) finished.push('second started before the first finished');
        },
      }),
    ).then((p) => (finished.push('second'), p));
    const [a, b] = await Promise.all([first, second]);
    await appending;
    expect(waitedFor[0]).toMatch(new RegExp(`^${hostname()}/${process.pid}/`));
    expect(finished).toEqual(['first', 'second']);
    expect([a.phase, b.phase]).toEqual(['done', 'done']);
    expect(await eventually(setup.settled, 20_000)).toBe(true);
  });

  it('renews its lease while it works and gives it back when it ends, done or failed', async () => {
    const setup = await runningSetup(1_000, 35);
    const leaseKey = processorKeys.rebuildLease(setup.snapshots.projection, setup.snapshots.keyPrefix);
    const ttls: number[] = [];
    const started = Date.now();
    await replay(
      setup.options({
        handlers: slowed(setup.handlers, 10, 25),
        lease: { leaseMs: 400, renewMs: 100 },
        onProgress: () => void ctx.redis.pttl(leaseKey).then((t) => ttls.push(t)),
      }),
    );
    // It outlived its lease several times over, and the lease never lapsed meanwhile.
    expect(Date.now() - started).toBeGreaterThan(1_000);
    expect(Math.min(...ttls)).toBeGreaterThan(0);
    expect(await ctx.redis.exists(leaseKey)).toBe(0);

    await expect(
      replay(
        setup.options({
          onProgress: () => {
            throw new Error('crash');
          },
        }),
      ),
    ).rejects.toThrow('crash');
    expect(await ctx.redis.exists(leaseKey)).toBe(0);
    // The interrupted rebuild is resumed at once by the next replay: no lease is left to wait for.
    expect((await replay(setup.options())).phase).toBe('done');
    expect(await eventually(setup.settled, 20_000)).toBe(true);
  });

  it('a rebuild whose lease is taken over stops, writes nothing more and throws RebuildLeaseLostError; the next replay finishes it', async () => {
    const setup = await runningSetup(3_000, 36);
    const leaseKey = processorKeys.rebuildLease(setup.snapshots.projection, setup.snapshots.keyPrefix);
    const shadowCursor = snapshotKeys.cursor(setup.streams.updates, `${setup.snapshots.projection}:rebuild`);
    const stateKey = processorKeys.rebuild(setup.snapshots.projection, setup.snapshots.keyPrefix);
    const paused = replay(setup.options({ lease: { leaseMs: 1_000, renewMs: 200 } }));
    expect(
      await eventually(async () => (await rebuildState(ctx.redis, setup.snapshots))?.phase === 'building', 5_000, 5),
    ).toBe(true);
    await sleep(100);
    // Another rebuild takes the lease (as if this one had been frozen past it): in one step, noting where the shadow was.
    const [[, cursorAtTakeover], [, stateAtTakeover]] = (await ctx.redis
      .multi()
      .get(shadowCursor)
      .hgetall(stateKey)
      .set(leaseKey, `999999 {"host":"elsewhere","pid":1,"startedAt":0}`, 'PX', 60_000)
      .exec()) as [[null, string | null], [null, Record<string, string>], unknown];
    const error = await rejection(paused);
    expect(error).toBeInstanceOf(RebuildLeaseLostError);
    expect((error as RebuildLeaseLostError).code).toBe('RS_REBUILD_LEASE_LOST');
    await sleep(300);
    expect(await ctx.redis.get(shadowCursor)).toBe(cursorAtTakeover);
    expect(await ctx.redis.hgetall(stateKey)).toEqual(stateAtTakeover);
    expect(await setup.snapshots.isHeld(setup.streams.updates)).toBe(false);
    expect(await ctx.redis.get(leaseKey)).toMatch(/^999999 /);

    // The usurper is gone (its lease expired): the next replay takes over and resumes from the shadow.
    await ctx.redis.del(leaseKey);
    const done: number[] = [];
    const result = await replay(setup.options({ onProgress: (p) => done.push(p.done) }));
    expect(done[0]).toBeGreaterThan(0);
    expect(result.phase).toBe('done');
    expect(await eventually(setup.settled, 20_000)).toBe(true);
  });
});
