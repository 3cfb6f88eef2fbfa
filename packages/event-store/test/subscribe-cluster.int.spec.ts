import type { Cluster, Redis } from 'ioredis';
import { describe, expect, it } from 'vitest';
import { RedisEventStore, type EventInput, type RecordedEvent } from '@redsource/event-store';
import { profileCatalog, type ProfileStreams } from '../../../apps/profile-api/src/domain/events.ts';
import { useTestCluster } from '../../../test/support/cluster.ts';
import { eventually, unique } from '../../../test/support/redis.ts';
import { rejection } from '../../../test/support/rejection.ts';

/**
 * subscribe() on a 3-master Redis Cluster: the streams are on different nodes, so one XREAD over
 * all of them would be CROSSSLOT; each stream is read on its own and the events merged.
 */
describe('subscribe() on a Redis Cluster', () => {
  const ctx = useTestCluster();

  /** A store on a Cluster client (typed as Redis, as the app passes it) whose connections carry a name of their own. */
  const isolated = async () => {
    const name = unique('es');
    const client = ctx.cluster.client({ redisOptions: { connectionName: name } });
    const redis = client as unknown as Redis;
    // Stream names no other test uses, each on another node.
    const streams: { -readonly [K in keyof ProfileStreams]: string } = {
      updates: unique('user_updates'),
      activity: '',
      friends: '',
    };
    const taken = new Set([await ctx.cluster.nodeForKey(streams.updates)]);
    for (const key of ['activity', 'friends'] as const) {
      for (let name = unique(`user_${key}`); ; name = unique(`user_${key}`)) {
        const node = await ctx.cluster.nodeForKey(name);
        if (taken.has(node)) continue;
        taken.add(node);
        streams[key] = name;
        break;
      }
    }
    return { name, redis, streams, store: new RedisEventStore({ redis, catalog: profileCatalog(streams) }) };
  };

  /** Connections named `name` on every master, and how many of them are blocked in XREAD. */
  const connections = async (name: string, redis: Redis) => {
    // The store's own client connects to each master when first used there: count it connected everywhere
    // (once it knows the slots: a command waits for that).
    await redis.exists(name);
    await Promise.all((redis as unknown as Cluster).nodes('master').map((node) => node.ping()));
    let count = 0;
    let blocked = 0;
    for (const port of await ctx.cluster.masters()) {
      for (const line of (await ctx.cluster.command(port, 'CLIENT', 'LIST')).split('\n')) {
        if (!line.includes(` name=${name} `)) continue;
        count++;
        if (/\bflags=\S*b/.test(line) && line.includes(' cmd=xread')) blocked++;
      }
    }
    return { count, blocked };
  };

  const register = (userId: string, name: string): EventInput => ({ type: 'register', data: { userId, name } });
  const like = (userId: string, object: string): EventInput => ({ type: 'like', data: { userId, object } });
  const add = (userId: string, friendId: string): EventInput => ({ type: 'add', data: { userId, friendId } });

  async function take(iterator: AsyncIterator<RecordedEvent>, n: number): Promise<RecordedEvent[]> {
    const out: RecordedEvent[] = [];
    for (let i = 0; i < n; i++) {
      const next = await iterator.next();
      if (next.done) throw new Error(`iterator ended after ${i} of ${n} events`);
      out.push(next.value);
    }
    return out;
  }

  it('follows streams on different nodes: every event once, each stream in order, old and new', async () => {
    const { store, streams } = await isolated();
    const appended: Record<string, string[]> = { [streams.updates]: [], [streams.activity]: [], [streams.friends]: [] };
    const append = async (stream: string, event: EventInput) =>
      (appended[stream] as string[]).push(...(await store.append(stream, event)).entryIds);
    for (let i = 0; i < 5; i++) {
      await append(streams.updates, register(String(i), `old${i}`));
      await append(streams.activity, like(String(i), `old${i}`));
      await append(streams.friends, add(String(i), `old${i}`));
    }
    const controller = new AbortController();
    const iterator = store.subscribe(Object.values(streams), {
      from: 'beginning',
      signal: controller.signal,
      blockMs: 1000,
      count: 2,
    });
    try {
      const received = take(iterator, 60);
      for (let i = 5; i < 20; i++) {
        await append(streams.activity, like(String(i), `new${i}`));
        await append(streams.friends, add(String(i), `new${i}`));
        await append(streams.updates, register(String(i), `new${i}`));
      }
      const events = await received;
      for (const stream of Object.values(streams)) {
        expect(
          events.filter((e) => e.stream === stream).map((e) => e.entryId),
          stream,
        ).toEqual(appended[stream]);
      }
      expect(
        events.find((e) => e.stream === streams.friends && e.entryId === appended[streams.friends]?.[19])?.data,
      ).toEqual({ userId: '19', friendId: 'new19' });
    } finally {
      controller.abort();
      await iterator.return(undefined);
    }
  });

  it("from 'latest' yields only what is appended after subscribe(); an abort ends the blocked reads at once and closes their connections", async () => {
    const { name, redis, store, streams } = await isolated();
    await store.append(streams.updates, register('1', 'old'));
    await store.append(streams.friends, add('1', 'old'));
    const before = (await connections(name, redis)).count;
    const controller = new AbortController();
    const iterator = store.subscribe([streams.updates, streams.friends], {
      from: 'latest',
      signal: controller.signal,
      blockMs: 20_000,
    });
    const pending = take(iterator, 2);
    // One reader per stream, each blocked on its stream's node.
    expect(await eventually(async () => (await connections(name, redis)).blocked === 2)).toBe(true);
    const fresh = [
      ...(await store.append(streams.friends, add('1', 'new'))).entryIds,
      ...(await store.append(streams.updates, register('1', 'new'))).entryIds,
    ];
    const events = await pending;
    expect(events.map((e) => e.entryId).sort()).toEqual(fresh.sort());

    const blocked = iterator.next();
    expect(await eventually(async () => (await connections(name, redis)).blocked === 2)).toBe(true);
    const started = Date.now();
    controller.abort();
    expect((await blocked).done).toBe(true);
    expect(Date.now() - started).toBeLessThan(5_000);
    expect((await iterator.next()).done).toBe(true);
    expect(await eventually(async () => (await connections(name, redis)).count === before)).toBe(true);
  });

  it('a failing reader fails the subscription and ends the others', async () => {
    const { name, redis, store, streams } = await isolated();
    const before = (await connections(name, redis)).count;
    // Short blocks: Redis 7.0 keeps an XREAD blocked on a key that is replaced by another type.
    const iterator = store.subscribe([streams.updates, streams.activity], { from: 'beginning', blockMs: 300 });
    const first: Promise<IteratorResult<RecordedEvent, void>> = iterator.next();
    expect(await eventually(async () => (await connections(name, redis)).blocked === 2)).toBe(true);
    // The activity stream is replaced by a string: its reader's next XREAD fails with WRONGTYPE.
    await store.append(streams.activity, like('1', 'a'));
    expect((await first).value?.stream).toBe(streams.activity);
    await redis.del(streams.activity);
    await redis.set(streams.activity, 'not a stream');
    const failed = await rejection(iterator.next());
    expect(String(failed)).toMatch(/WRONGTYPE/);
    expect(await eventually(async () => (await connections(name, redis)).count === before)).toBe(true);
  });
});
