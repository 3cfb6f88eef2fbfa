import { afterAll, describe, expect, it } from 'vitest';
import type { Redis } from 'ioredis';
import {
  AppendNotConfirmedError,
  AppendRejectedError,
  EventValidationError,
  RedisEventStore,
  UndecodableEntryError,
  UnknownStreamError,
  VersionConflictError,
  eventStoreKeys,
  isVersionConflictError,
  toStreamEntries,
  type EventInput,
  type EventStoreError,
  type RecordedEvent,
  type StreamEntry,
} from '@redsource/event-store';
import { profileCatalog, type ProfileStreams } from '../../../apps/profile-api/src/domain/events.ts';
import { eventually, unique, useTestRedis } from '../../../test/support/redis.ts';
import { rejection } from '../../../test/support/rejection.ts';

const ctx = useTestRedis();
/** Clients made with duplicate(): the harness does not know them, so they are closed here, before the server. */
const ownClients: Redis[] = [];

afterAll(() => {
  for (const client of ownClients.splice(0)) client.disconnect();
});

/** A store over three stream names no other test uses. */
function isolated(client: Redis = ctx.redis) {
  const streams: ProfileStreams = {
    updates: unique('user_updates'),
    activity: unique('user_activity'),
    friends: unique('user_friends'),
  };
  return { streams, store: new RedisEventStore({ redis: client, catalog: profileCatalog(streams) }) };
}

/** A store whose connections (and the subscription connections it duplicates) carry a name of their own. */
function named() {
  const name = unique('es');
  const client = ctx.redis.duplicate({ connectionName: name });
  ownClients.push(client);
  return { name, ...isolated(client) };
}

const register = (userId: string, name = `N${userId}`, id?: string): EventInput => ({
  type: 'register',
  data: { userId, name },
  ...(id === undefined ? {} : { metadata: { id } }),
});
const like = (userId: string, object: string): EventInput => ({ type: 'like', data: { userId, object } });

const xrange = async (stream: string) => toStreamEntries(await ctx.redis.xrange(stream, '-', '+'));

/** The value of one field of a raw entry. */
function field(entry: StreamEntry | undefined, name: string): string | undefined {
  if (!entry) return undefined;
  for (let i = 0; i + 1 < entry.fields.length; i += 2) if (entry.fields[i] === name) return entry.fields[i + 1];
  return undefined;
}

async function collect(iterable: AsyncIterable<RecordedEvent>): Promise<RecordedEvent[]> {
  const out: RecordedEvent[] = [];
  for await (const event of iterable) out.push(event);
  return out;
}

/** The next `n` events of an iterator (fails if it ends first). */
async function take(iterator: AsyncIterator<RecordedEvent>, n: number): Promise<RecordedEvent[]> {
  const out: RecordedEvent[] = [];
  for (let i = 0; i < n; i++) {
    const next = await iterator.next();
    if (next.done) throw new Error(`iterator ended after ${i} of ${n} events`);
    out.push(next.value);
  }
  return out;
}

/** Whether a connection with this name is blocked in XREAD right now. */
async function blockedInXread(name: string): Promise<boolean> {
  const list = String(await ctx.redis.call('CLIENT', 'LIST'));
  return list
    .split('\n')
    .some((line) => line.includes(` name=${name} `) && /\bflags=\S*b/.test(line) && line.includes(' cmd=xread'));
}

async function connectionsNamed(name: string): Promise<number> {
  const list = String(await ctx.redis.call('CLIENT', 'LIST'));
  return list.split('\n').filter((line) => line.includes(` name=${name} `)).length;
}

describe('append writes events to the stream in order', () => {
  it('appends one event and returns its entry id, which XRANGE shows with the envelope fields', async () => {
    const { streams, store } = isolated();
    const result = await store.append(streams.updates, register('1', 'Duffy'));
    expect(result.entryIds).toHaveLength(1);
    expect(result.duplicates).toEqual([]);
    expect(result.versions).toEqual({ '1': 1 });
    const entries = await xrange(streams.updates);
    expect(entries.map((e) => e.id)).toEqual(result.entryIds);
    expect(field(entries[0], 'type')).toBe('register');
    expect(field(entries[0], 'subject')).toBe('1');
    expect(JSON.parse(field(entries[0], 'data') ?? 'null')).toEqual({ userId: '1', name: 'Duffy' });
  });

  it('appends many events in one call and returns their ids in order', async () => {
    const { streams, store } = isolated();
    const events = [like('1', 'p1'), like('2', 'p2'), like('1', 'p3'), like('3', 'p4')];
    const result = await store.append(streams.activity, events);
    const entries = await xrange(streams.activity);
    expect(entries).toHaveLength(4);
    expect(result.entryIds).toEqual(entries.map((e) => e.id));
    expect(
      entries.map((e) => JSON.parse(field(e, 'data') ?? 'null') as { object: string }).map((d) => d.object),
    ).toEqual(['p1', 'p2', 'p3', 'p4']);
    expect(result.versions).toEqual({ '1': 2, '2': 1, '3': 1 });
  });

  it('returns an empty result for an empty batch and writes nothing', async () => {
    const { streams, store } = isolated();
    expect(await store.append(streams.updates, [])).toEqual({ entryIds: [], duplicates: [], versions: {} });
    expect(await ctx.redis.exists(streams.updates)).toBe(0);
  });

  it('refuses a stream that is not in the catalog', async () => {
    const { store } = isolated();
    const stream = unique('elsewhere');
    expect(await rejection(store.append(stream, register('1')))).toBeInstanceOf(UnknownStreamError);
    expect(await ctx.redis.exists(stream)).toBe(0);
  });
});

describe('an invalid event rejects the whole batch', () => {
  it('throws EventValidationError naming the field and writes nothing', async () => {
    const { streams, store } = isolated();
    const batch: EventInput[] = [
      register('1', 'A', 'ok-1'),
      { type: 'register', data: { userId: '2' } },
      register('3', 'C'),
    ];
    const error = await rejection(store.append(streams.updates, batch));
    expect(error).toBeInstanceOf(EventValidationError);
    expect((error as EventValidationError).issues.map((i) => i.field)).toEqual(['name']);
    expect((error as EventValidationError).message).toContain('name');
    expect(await ctx.redis.xlen(streams.updates)).toBe(0);
    expect(await store.version(streams.updates, '1')).toBe(0);
    expect(await ctx.redis.exists(eventStoreKeys.eventIds(streams.updates))).toBe(0);
  });

  it('names a nested-path field of a friend event', async () => {
    const { streams, store } = isolated();
    const error = await rejection(
      store.append(streams.friends, [{ type: 'add', data: { userId: '1', friendId: 'x y' } }]),
    );
    expect(error).toBeInstanceOf(EventValidationError);
    expect((error as EventValidationError).issues.map((i) => i.field)).toEqual(['friendId']);
    expect(await ctx.redis.xlen(streams.friends)).toBe(0);
  });
});

describe('appends with an event id are idempotent', () => {
  it('reports a repeated id as a duplicate with the original entry id and does not write it again', async () => {
    const { streams, store } = isolated();
    const first = await store.append(streams.updates, register('1', 'A', 'evt-1'));
    expect(first.duplicates).toEqual([]);
    const second = await store.append(streams.updates, register('1', 'A', 'evt-1'));
    expect(second.duplicates).toEqual([0]);
    expect(second.entryIds).toEqual(first.entryIds);
    expect(await ctx.redis.xlen(streams.updates)).toBe(1);
    expect(await store.version(streams.updates, '1')).toBe(1);
  });

  it('appends the new events of a retried batch and reports only the repeated ones', async () => {
    const { streams, store } = isolated();
    const first = await store.append(streams.updates, register('1', 'A', 'evt-1'));
    const retry = await store.append(streams.updates, [register('1', 'A', 'evt-1'), register('2', 'B', 'evt-2')]);
    expect(retry.duplicates).toEqual([0]);
    expect(retry.entryIds[0]).toBe(first.entryIds[0]);
    expect(retry.entryIds[1]).not.toBe(first.entryIds[0]);
    expect(await ctx.redis.xlen(streams.updates)).toBe(2);
  });

  it('writes an id repeated within one batch once and gives both the same entry id', async () => {
    const { streams, store } = isolated();
    const result = await store.append(streams.updates, [
      register('1', 'A', 'x'),
      register('2', 'B', 'y'),
      register('1', 'A', 'x'),
    ]);
    expect(result.duplicates).toEqual([2]);
    expect(result.entryIds[2]).toBe(result.entryIds[0]);
    expect(result.entryIds[1]).not.toBe(result.entryIds[0]);
    expect(await ctx.redis.xlen(streams.updates)).toBe(2);
    expect(await store.version(streams.updates, '1')).toBe(1);
  });

  it('keeps the id as the envelope id', async () => {
    const { streams, store } = isolated();
    await store.append(streams.updates, register('1', 'A', 'evt-42'));
    const [event] = await collect(store.read(streams.updates));
    expect(event?.metadata['id']).toBe('evt-42');
  });
});

describe('expectedVersion guards the subject against concurrent writers', () => {
  it("'no_subject' succeeds for a new subject, then fails with VersionConflictError and writes nothing", async () => {
    const { streams, store } = isolated();
    const first = await store.append(streams.updates, register('1', 'A'), { expectedVersion: 'no_subject' });
    expect(first.versions).toEqual({ '1': 1 });
    const error = await rejection(store.append(streams.updates, register('1', 'B'), { expectedVersion: 'no_subject' }));
    expect(error).toBeInstanceOf(VersionConflictError);
    expect(isVersionConflictError(error)).toBe(true);
    const conflict = error as VersionConflictError;
    expect(conflict.code).toBe('RS_VERSION_CONFLICT');
    expect(conflict.subject).toBe('1');
    expect(conflict.expected).toBe(0);
    expect(conflict.actual).toBe(1);
    expect(await ctx.redis.xlen(streams.updates)).toBe(1);
    expect(await store.version(streams.updates, '1')).toBe(1);
  });

  it('succeeds with a matching numeric version and fails with a stale one', async () => {
    const { streams, store } = isolated();
    await store.append(streams.updates, register('1', 'A'));
    const ok = await store.append(
      streams.updates,
      { type: 'update', data: { userId: '1', city: 'X' } },
      { expectedVersion: 1 },
    );
    expect(ok.versions).toEqual({ '1': 2 });
    const error = await rejection(
      store.append(streams.updates, { type: 'update', data: { userId: '1', city: 'Y' } }, { expectedVersion: 1 }),
    );
    expect(isVersionConflictError(error)).toBe(true);
    expect((error as VersionConflictError).actual).toBe(2);
    expect(await ctx.redis.xlen(streams.updates)).toBe(2);
  });

  it('checks the version before the batch: several events of one subject in one batch pass', async () => {
    const { streams, store } = isolated();
    const result = await store.append(
      streams.updates,
      [register('1', 'A'), { type: 'update', data: { userId: '1', city: 'X' } }],
      { expectedVersion: 'no_subject' },
    );
    expect(result.versions).toEqual({ '1': 2 });
    expect(await ctx.redis.xlen(streams.updates)).toBe(2);
  });

  it('rejects the whole batch when any subject conflicts', async () => {
    const { streams, store } = isolated();
    await store.append(streams.updates, register('2', 'B'));
    const error = await rejection(
      store.append(streams.updates, [register('1', 'A'), register('2', 'B2')], { expectedVersion: 'no_subject' }),
    );
    expect(isVersionConflictError(error)).toBe(true);
    expect((error as VersionConflictError).subject).toBe('2');
    expect(await ctx.redis.xlen(streams.updates)).toBe(1);
    expect(await store.version(streams.updates, '1')).toBe(0);
  });

  it("ignores versions with 'any' (the default)", async () => {
    const { streams, store } = isolated();
    await store.append(streams.updates, register('1', 'A'));
    await store.append(streams.updates, register('1', 'B'), { expectedVersion: 'any' });
    await store.append(streams.updates, register('1', 'C'));
    expect(await store.version(streams.updates, '1')).toBe(3);
  });

  it('refuses a negative or fractional expectedVersion before writing', async () => {
    const { streams, store } = isolated();
    expect(await rejection(store.append(streams.updates, register('1'), { expectedVersion: -1 }))).toBeInstanceOf(
      RangeError,
    );
    expect(await rejection(store.append(streams.updates, register('1'), { expectedVersion: 1.5 }))).toBeInstanceOf(
      RangeError,
    );
    expect(await ctx.redis.exists(streams.updates)).toBe(0);
  });
});

describe('a versions hash edited by hand', () => {
  // 'nan' compared unequal to itself: the expectedVersion check was skipped and the count stayed 'nan'.
  it.each(['nan', 'abc', '-1', '1.5'])(
    "refuses to append to a subject whose count is '%s', with or without expectedVersion, writing nothing",
    async (corrupt) => {
      const { streams, store } = isolated();
      await ctx.redis.hset(eventStoreKeys.versions(streams.updates), '1', corrupt);
      for (const options of [{ expectedVersion: 0 }, { expectedVersion: 7 }, {}]) {
        const error = await rejection(store.append(streams.updates, register('1', 'A'), options));
        expect(error).toBeInstanceOf(AppendRejectedError);
        expect(String(error)).toContain(`holds "${corrupt}" for subject "1", not a count of events`);
      }
      expect(await ctx.redis.exists(streams.updates)).toBe(0);
      expect(await ctx.redis.hget(eventStoreKeys.versions(streams.updates), '1')).toBe(corrupt);
      // Other subjects are not affected; set right, the subject appends again.
      expect((await store.append(streams.updates, register('2', 'B'))).versions).toEqual({ '2': 1 });
      await ctx.redis.hset(eventStoreKeys.versions(streams.updates), '1', '4');
      expect((await store.append(streams.updates, register('1', 'A'), { expectedVersion: 4 })).versions).toEqual({
        '1': 5,
      });
    },
  );
  it('counts past 10^14 on in digits (tostring would write 1e+14, which the next append would refuse)', async () => {
    const { streams, store } = isolated();
    await ctx.redis.hset(eventStoreKeys.versions(streams.updates), '1', '99999999999999');
    expect((await store.append(streams.updates, register('1', 'A'))).versions).toEqual({ '1': 100000000000000 });
    expect(await ctx.redis.hget(eventStoreKeys.versions(streams.updates), '1')).toBe('100000000000000');
    const next = await store.append(streams.updates, register('1', 'B'), { expectedVersion: 100000000000000 });
    expect(next.versions).toEqual({ '1': 100000000000001 });
  });
});

describe('version()', () => {
  it('counts the events appended per subject and is 0 for an unknown subject', async () => {
    const { streams, store } = isolated();
    expect(await store.version(streams.activity, '1')).toBe(0);
    await store.append(streams.activity, [like('1', 'a'), like('1', 'b'), like('2', 'c')]);
    await store.append(streams.activity, like('1', 'd'));
    expect(await store.version(streams.activity, '1')).toBe(3);
    expect(await store.version(streams.activity, '2')).toBe(1);
    expect(await store.version(streams.activity, '3')).toBe(0);
  });

  it('returns the version of a subject named __proto__ or constructor as its own key', async () => {
    const { streams, store } = isolated();
    const result = await store.append(streams.activity, [
      like('__proto__', 'a'),
      like('__proto__', 'b'),
      like('constructor', 'c'),
    ]);
    expect(Object.entries(result.versions)).toEqual([
      ['__proto__', 2],
      ['constructor', 1],
    ]);
    expect(await store.version(streams.activity, '__proto__')).toBe(2);
  });
});

describe('read() pages through a stream in order', () => {
  it('yields more entries than one page, in order, one XRANGE page at a time', async () => {
    const { streams, store } = isolated();
    const total = 1200;
    const events = Array.from({ length: total }, (_, i) => like(String(i % 7), `p${i}`));
    const { entryIds } = await store.append(streams.activity, events);
    const pages: number[] = [];
    for await (const page of store.readPages(streams.activity, { pageSize: 500 })) pages.push(page.length);
    expect(pages).toEqual([500, 500, 200]);
    const read = await collect(store.read(streams.activity, { pageSize: 500 }));
    expect(read).toHaveLength(total);
    expect(read.map((e) => e.entryId)).toEqual(entryIds);
    expect(read.map((e) => (e.data as { object: string }).object)).toEqual(events.map((_, i) => `p${i}`));
  });

  it('reads the flat form written by any client and the envelope form alike', async () => {
    const { streams, store } = isolated();
    await ctx.redis.xadd(
      streams.updates,
      '*',
      'user_id',
      '1',
      'command',
      'register',
      'name',
      'Duffy',
      'surename',
      'Duck',
    );
    await store.append(streams.updates, { type: 'register', data: { userId: '1', name: 'Duffy', surname: 'Duck' } });
    const [flat, envelope] = await collect(store.read(streams.updates));
    expect(flat?.format).toBe('flat');
    expect(envelope?.format).toBe('envelope');
    expect(envelope?.data).toEqual(flat?.data);
  });

  it('honours from/to bounds', async () => {
    const { streams, store } = isolated();
    const { entryIds } = await store.append(streams.activity, [
      like('1', 'a'),
      like('1', 'b'),
      like('1', 'c'),
      like('1', 'd'),
    ]);
    const read = await collect(store.read(streams.activity, { from: entryIds[1], to: entryIds[2], pageSize: 1 }));
    expect(read.map((e) => e.entryId)).toEqual(entryIds.slice(1, 3));
  });

  it('hands an undecodable entry to onInvalid and goes on; without onInvalid it throws', async () => {
    const { streams, store } = isolated();
    await store.append(streams.updates, [register('1', 'A'), register('2', 'B')]);
    const badId = await ctx.redis.xadd(streams.updates, '*', 'user_id', '3', 'name', 'no type field');
    await store.append(streams.updates, register('4', 'D'));
    const invalid: { error: EventStoreError; entry: StreamEntry }[] = [];
    const read = await collect(
      store.read(streams.updates, { pageSize: 2, onInvalid: (error, entry) => invalid.push({ error, entry }) }),
    );
    expect(read.map((e) => (e.data as { userId: string }).userId)).toEqual(['1', '2', '4']);
    expect(invalid).toHaveLength(1);
    expect(invalid[0]?.error).toBeInstanceOf(UndecodableEntryError);
    expect(invalid[0]?.entry).toEqual({ id: badId, fields: ['user_id', '3', 'name', 'no type field'] });

    const seen: string[] = [];
    const error = await rejection(
      (async () => {
        for await (const event of store.read(streams.updates)) seen.push((event.data as { userId: string }).userId);
      })(),
    );
    expect(error).toBeInstanceOf(UndecodableEntryError);
    expect((error as UndecodableEntryError).entryId).toBe(badId);
    expect(seen).toEqual(['1', '2']);
  });

  it('yields nothing for a stream that does not exist', async () => {
    const { streams, store } = isolated();
    expect(await collect(store.read(streams.friends))).toEqual([]);
  });
});

describe('subscribe() follows several streams', () => {
  it("from 'beginning' yields the old entries, then the ones appended after subscribing", async () => {
    const { streams, store } = isolated();
    const oldUpdates = await store.append(streams.updates, [register('1', 'A'), register('2', 'B')]);
    const oldActivity = await store.append(streams.activity, like('1', 'p1'));
    const controller = new AbortController();
    const iterator = store.subscribe([streams.updates, streams.activity], {
      from: 'beginning',
      signal: controller.signal,
      blockMs: 1000,
    });
    try {
      const old = await take(iterator, 3);
      expect(old.filter((e) => e.stream === streams.updates).map((e) => e.entryId)).toEqual(oldUpdates.entryIds);
      expect(old.filter((e) => e.stream === streams.activity).map((e) => e.entryId)).toEqual(oldActivity.entryIds);

      const next = take(iterator, 2);
      const newActivity = await store.append(streams.activity, like('2', 'p2'));
      const newUpdates = await store.append(streams.updates, register('3', 'C'));
      const fresh = await next;
      expect(fresh.map((e) => e.entryId).sort()).toEqual([...newActivity.entryIds, ...newUpdates.entryIds].sort());
      expect(fresh.find((e) => e.stream === streams.updates)?.data).toEqual({ userId: '3', name: 'C' });
      expect(fresh.find((e) => e.stream === streams.activity)?.data).toEqual({ userId: '2', object: 'p2' });
    } finally {
      controller.abort();
      await iterator.return(undefined);
    }
  });

  it("from 'latest' yields only entries appended after the subscription started", async () => {
    const { name, streams, store } = named();
    await store.append(streams.updates, register('1', 'old'));
    await store.append(streams.activity, like('1', 'old'));
    const controller = new AbortController();
    const iterator = store.subscribe([streams.updates, streams.activity], {
      from: 'latest',
      signal: controller.signal,
      blockMs: 1000,
    });
    try {
      const pending = take(iterator, 2);
      expect(await eventually(() => blockedInXread(name))).toBe(true);
      const newActivity = await store.append(streams.activity, like('1', 'new'));
      const newUpdates = await store.append(streams.updates, register('1', 'new'));
      const events = await pending;
      expect(events.map((e) => e.entryId).sort()).toEqual([...newActivity.entryIds, ...newUpdates.entryIds].sort());
      expect(events.map((e) => JSON.stringify(e.data)).sort()).toEqual(
        [JSON.stringify({ userId: '1', name: 'new' }), JSON.stringify({ userId: '1', object: 'new' })].sort(),
      );
    } finally {
      controller.abort();
      await iterator.return(undefined);
    }
  });

  it('from {after: id} yields the entries after that id', async () => {
    const { streams, store } = isolated();
    const { entryIds } = await store.append(streams.activity, [like('1', 'a'), like('1', 'b'), like('1', 'c')]);
    const after = entryIds[0] ?? '';
    const controller = new AbortController();
    const iterator = store.subscribe([streams.activity], { from: { after }, signal: controller.signal, blockMs: 1000 });
    try {
      const events = await take(iterator, 2);
      expect(events.map((e) => e.entryId)).toEqual(entryIds.slice(1));
      expect(events.map((e) => (e.data as { object: string }).object)).toEqual(['b', 'c']);
    } finally {
      controller.abort();
      await iterator.return(undefined);
    }
  });

  it('takes a start position per stream', async () => {
    const { streams, store } = isolated();
    const updates = await store.append(streams.updates, [register('1', 'A'), register('2', 'B')]);
    const activity = await store.append(streams.activity, [like('1', 'a'), like('1', 'b')]);
    const controller = new AbortController();
    const iterator = store.subscribe([streams.updates, streams.activity], {
      from: { [streams.updates]: { after: updates.entryIds[0] ?? '' }, [streams.activity]: 'beginning' },
      signal: controller.signal,
      blockMs: 1000,
    });
    try {
      const events = await take(iterator, 3);
      expect(events.filter((e) => e.stream === streams.updates).map((e) => e.entryId)).toEqual(
        updates.entryIds.slice(1),
      );
      expect(events.filter((e) => e.stream === streams.activity).map((e) => e.entryId)).toEqual(activity.entryIds);
    } finally {
      controller.abort();
      await iterator.return(undefined);
    }
  });

  it('ends the iterator promptly when the signal aborts during a blocking read, and closes its connection', async () => {
    const { name, streams, store } = named();
    const controller = new AbortController();
    const iterator = store.subscribe([streams.updates, streams.friends], {
      from: 'latest',
      signal: controller.signal,
      blockMs: 20_000,
    });
    const pending = iterator.next();
    expect(await eventually(() => blockedInXread(name))).toBe(true);
    const started = Date.now();
    controller.abort();
    const result = await pending;
    expect(result.done).toBe(true);
    expect(Date.now() - started).toBeLessThan(5_000);
    expect((await iterator.next()).done).toBe(true);
    // Only the store's own connection keeps the name: the subscription's reader is gone.
    expect(await eventually(async () => (await connectionsNamed(name)) === 1)).toBe(true);
  });

  it('ends at once for a signal that aborted between two events', async () => {
    const { streams, store } = isolated();
    await store.append(streams.activity, [like('1', 'a'), like('1', 'b')]);
    const controller = new AbortController();
    const iterator = store.subscribe([streams.activity], {
      from: 'beginning',
      signal: controller.signal,
      blockMs: 20_000,
    });
    const [first] = await take(iterator, 1);
    expect((first?.data as { object: string }).object).toBe('a');
    controller.abort();
    // 'b' came in the same XREAD reply and is still yielded; after it the loop sees the abort.
    const rest: RecordedEvent[] = [];
    const started = Date.now();
    for (let next = await iterator.next(); !next.done; next = await iterator.next()) rest.push(next.value);
    expect(rest.map((e) => (e.data as { object: string }).object)).toEqual(['b']);
    expect(Date.now() - started).toBeLessThan(5_000);
  });

  it('reports undecodable entries to onInvalid and throws without it', async () => {
    const { streams, store } = isolated();
    const badId = await ctx.redis.xadd(streams.friends, '*', 'user_id', '1', 'command', 'add');
    await store.append(streams.friends, { type: 'add', data: { userId: '1', friendId: '2' } });
    const controller = new AbortController();
    const invalid: string[] = [];
    const iterator = store.subscribe([streams.friends], {
      from: 'beginning',
      signal: controller.signal,
      blockMs: 1000,
      onInvalid: (error, entry) => invalid.push(`${error.name}:${entry.id}`),
    });
    try {
      const [event] = await take(iterator, 1);
      expect(event?.data).toEqual({ userId: '1', friendId: '2' });
      expect(invalid).toEqual([`EventValidationError:${badId}`]);
    } finally {
      controller.abort();
      await iterator.return(undefined);
    }
    const strict = store.subscribe([streams.friends], { from: 'beginning', blockMs: 1000 });
    expect(await rejection(strict.next())).toBeInstanceOf(EventValidationError);
  });
});

describe('regressions: expectedVersion with duplicates in the batch', () => {
  const update = (userId: string, city: string, id?: string): EventInput => ({
    type: 'update',
    data: { userId, city },
    ...(id === undefined ? {} : { metadata: { id } }),
  });

  it('checks the version on the first event that is not a duplicate: a stale batch that starts with a duplicate conflicts', async () => {
    const { streams, store } = isolated();
    await store.append(streams.updates, register('1', 'A', 'a1'));
    const second = await store.append(streams.updates, update('1', 'X'));
    expect(second.versions).toEqual({ '1': 2 });
    const before = await xrange(streams.updates);

    const error = await rejection(
      store.append(streams.updates, [register('1', 'A', 'a1'), update('1', 'Y')], { expectedVersion: 'no_subject' }),
    );
    expect(error).toBeInstanceOf(VersionConflictError);
    expect((error as VersionConflictError).subject).toBe('1');
    expect((error as VersionConflictError).expected).toBe(0);
    expect((error as VersionConflictError).actual).toBe(2);
    expect(await xrange(streams.updates)).toEqual(before);
    expect(await store.version(streams.updates, '1')).toBe(2);
  });

  it('lets a pure retry (every event a duplicate) through with the original expectedVersion and returns the original entry ids', async () => {
    const { streams, store } = isolated();
    const batch = [register('1', 'A', 'r1'), update('1', 'X', 'u1')];
    const first = await store.append(streams.updates, batch, { expectedVersion: 'no_subject' });
    expect(first.versions).toEqual({ '1': 2 });

    const retry = await store.append(streams.updates, batch, { expectedVersion: 'no_subject' });
    expect(retry.entryIds).toEqual(first.entryIds);
    expect(retry.duplicates).toEqual([0, 1]);
    expect(await ctx.redis.xlen(streams.updates)).toBe(2);
    expect(await store.version(streams.updates, '1')).toBe(2);
  });

  it('compares the version before the first new event with the expectation when the batch starts with a duplicate', async () => {
    const { streams, store } = isolated();
    const first = await store.append(streams.updates, register('1', 'A', 'r1'), { expectedVersion: 'no_subject' });
    const next = await store.append(streams.updates, [register('1', 'A', 'r1'), update('1', 'X', 'u2')], {
      expectedVersion: 1,
    });
    expect(next.duplicates).toEqual([0]);
    expect(next.entryIds[0]).toBe(first.entryIds[0]);
    expect(next.versions).toEqual({ '1': 2 });
    expect(await ctx.redis.xlen(streams.updates)).toBe(2);
  });
});

describe("regressions: subscribe() from 'latest' starts when subscribe() is called", () => {
  /** The first event of an iterator, or an error if none comes in time. */
  async function firstWithin(iterator: AsyncIterator<RecordedEvent>, ms: number): Promise<RecordedEvent> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`no event within ${ms} ms`)), ms);
    });
    try {
      const next = await Promise.race([iterator.next(), timeout]);
      if (next.done) throw new Error('iterator ended without an event');
      return next.value;
    } finally {
      clearTimeout(timer);
    }
  }

  it('yields an event appended after subscribe() but before iterating, on an empty stream', async () => {
    const { streams, store } = isolated();
    const controller = new AbortController();
    const sub = store.subscribe([streams.updates], { from: 'latest', signal: controller.signal, blockMs: 200 });
    try {
      const { entryIds } = await store.append(streams.updates, register('1', 'after-subscribe'));
      const event = await firstWithin(sub, 5_000);
      expect(event.entryId).toBe(entryIds[0]);
      expect(event.data).toEqual({ userId: '1', name: 'after-subscribe' });
    } finally {
      controller.abort();
      await sub.return(undefined);
    }
  });

  it('yields an event appended after subscribe() before iterating, and not the one appended before subscribe()', async () => {
    const { streams, store } = isolated();
    await store.append(streams.updates, register('1', 'before'));
    const controller = new AbortController();
    const sub = store.subscribe([streams.updates, streams.activity], {
      from: 'latest',
      signal: controller.signal,
      blockMs: 200,
    });
    try {
      const { entryIds } = await store.append(streams.updates, register('2', 'after'));
      const event = await firstWithin(sub, 5_000);
      expect(event.entryId).toBe(entryIds[0]);
      expect(event.data).toEqual({ userId: '2', name: 'after' });
    } finally {
      controller.abort();
      await sub.return(undefined);
    }
  });
});

describe('regressions: Redis refuses an append', () => {
  it('throws AppendRejectedError, not AppendNotConfirmedError, when the stream key holds a string', async () => {
    const { streams, store } = isolated();
    await ctx.redis.set(streams.updates, 'x');
    const error = await rejection(store.append(streams.updates, register('1', 'A', 'e1')));
    expect(error).toBeInstanceOf(AppendRejectedError);
    expect(error).not.toBeInstanceOf(AppendNotConfirmedError);
    expect((error as AppendRejectedError).code).toBe('RS_APPEND_REJECTED');
    expect((error as AppendRejectedError).message).toContain(streams.updates);
    expect(await ctx.redis.get(streams.updates)).toBe('x');
    expect(
      await ctx.redis.exists(eventStoreKeys.versions(streams.updates), eventStoreKeys.eventIds(streams.updates)),
    ).toBe(0);
  });

  it("passes on Redis' own refusal of the first XADD (a stream past its last possible id), writing nothing", async () => {
    const { streams, store } = isolated();
    await ctx.redis.xadd(streams.updates, '1-1', 'n', '1');
    await ctx.redis.call('XSETID', streams.updates, '18446744073709551615-18446744073709551615');
    for (const eventId of [undefined, 'e1']) {
      const error = await rejection(store.append(streams.updates, register('1', 'A', eventId)));
      expect(error).toBeInstanceOf(AppendRejectedError);
      expect(String(error)).toContain('exhausted the last possible ID');
    }
    expect(await ctx.redis.xlen(streams.updates)).toBe(1);
    expect(
      await ctx.redis.exists(eventStoreKeys.versions(streams.updates), eventStoreKeys.eventIds(streams.updates)),
    ).toBe(0);
  });

  it('takes back the events it wrote when a later XADD of the call is refused (room for one more id only)', async () => {
    const { streams, store } = isolated();
    await ctx.redis.xadd(streams.updates, '1-1', 'n', '1');
    await ctx.redis.call('XSETID', streams.updates, '18446744073709551615-18446744073709551614');
    const error = await rejection(
      store.append(streams.updates, [register('1', 'A', 'e1'), register('2', 'B', 'e2'), register('3', 'C')]),
    );
    expect(error).toBeInstanceOf(AppendRejectedError);
    expect(String(error)).toContain('exhausted the last possible ID');
    expect((await ctx.redis.xrange(streams.updates, '-', '+')).map(([id]) => id)).toEqual(['1-1']);
    expect(
      await ctx.redis.exists(
        eventStoreKeys.versions(streams.updates),
        eventStoreKeys.eventIds(streams.updates),
        eventStoreKeys.eventIdsByAge(streams.updates),
      ),
    ).toBe(0);
  });

  it('writes nothing when a bookkeeping key has the wrong type', async () => {
    const { streams, store } = isolated();
    await ctx.redis.set(eventStoreKeys.versions(streams.updates), 'x');
    const error = await rejection(store.append(streams.updates, register('1', 'A', 'e1')));
    expect(error).toBeInstanceOf(AppendRejectedError);
    expect(await ctx.redis.exists(streams.updates, eventStoreKeys.eventIds(streams.updates))).toBe(0);
  });

  // The script finds a key of another type before its first write (a read, the first XADD, or a TYPE
  // of the age set): each case names the key and its type, and leaves every other key as it was.
  const wrongTyped = [
    { key: 'stream', of: (s: string) => s, expected: 'a stream' },
    { key: 'versions', of: (s: string) => eventStoreKeys.versions(s), expected: 'a hash' },
    { key: 'event ids', of: (s: string) => eventStoreKeys.eventIds(s), expected: 'a hash' },
    { key: 'event ids by age', of: (s: string) => eventStoreKeys.eventIdsByAge(s), expected: 'a zset' },
  ];
  for (const { key, of, expected } of wrongTyped)
    for (const withId of [true, false])
      it(`refuses the ${key} key holding a list, ${withId ? 'with' : 'without'} an event id, writing nothing`, async () => {
        const { streams, store } = isolated();
        const stream = streams.updates;
        await ctx.redis.rpush(of(stream), 'x');
        const append = store.append(stream, [register('1', 'A', withId ? 'e1' : undefined), register('2', 'B')]);
        // The ids' keys are only touched by an append with ids: without, the append goes through.
        if (!withId && of(stream).includes('event-ids')) {
          expect((await append).entryIds).toHaveLength(2);
          return;
        }
        const error = await rejection(append);
        expect(error).toBeInstanceOf(AppendRejectedError);
        expect(String(error)).toContain(`${of(stream)} is a list, expected ${expected}`);
        for (const other of wrongTyped.filter((w) => w.key !== key))
          expect(await ctx.redis.exists(other.of(stream))).toBe(0);
      });
});

describe('RedisEventStore.append: the events travel as one JSON argument', () => {
  // Quotes, backslashes, control characters, NUL, astral and combining characters, JSON-looking text
  // and lone UTF-16 surrogates: each must land as the bytes a separate ioredis argument writes.
  const awkward = [
    'plain',
    'quote " and backslash \\ and slash /',
    'tab\tnewline\nreturn\r form\f bell\u0007 nul\u0000 del\u007f',
    'ü é ß 中文 🦆 e\u0301',
    '{"looks":"like json"}',
    '\\u0041 is not A',
    'lone high \ud800 and lone low \udc00 and a pair \ud83e\udd86',
    '',
  ];

  it('stores every field byte for byte as a raw XADD of the same string does', async () => {
    const { streams, store } = isolated();
    const events: EventInput[] = awkward.map((text, i) => ({
      type: 'register',
      data: { userId: `u${i}`, name: `n${i}`, bio: text },
      metadata: { id: `awkward-${i}`, source: text === '' ? 'src' : text },
    }));
    const { entryIds } = await store.append(streams.updates, events);
    const stored = await ctx.redis.xrangeBuffer(streams.updates, '-', '+');
    expect(stored.map(([id]) => id.toString())).toEqual(entryIds);
    const reference = unique('reference');
    for (const [i, [, fields]] of stored.entries()) {
      const expected = store.codec.encode(streams.updates, events[i] as EventInput).fields;
      const referenceId = await ctx.redis.xadd(reference, '*', ...expected);
      const [referenceEntry] = await ctx.redis.xrangeBuffer(reference, referenceId as string, referenceId as string);
      const referenceFields = referenceEntry?.[1] ?? [];
      // `id` and `time` are generated per encode: every other field is compared as bytes.
      const named = (list: Buffer[]) =>
        Object.fromEntries(
          list.flatMap((b, j) => (j % 2 === 0 ? [[b.toString(), (list[j + 1] as Buffer).toString('hex')]] : [])),
        );
      const got = named(fields);
      const want = named(referenceFields);
      expect(got['id']).toBe(Buffer.from(`awkward-${i}`).toString('hex'));
      for (const name of ['source', 'data', 'type', 'subject', 'specversion', 'datacontenttype'])
        expect(got[name], `${name} of event ${i}`).toBe(want[name]);
    }
    await ctx.redis.del(reference);
  });

  it('appends a large batch (2000 events, ~50k values) in one call, in order', async () => {
    const { streams, store } = isolated();
    const events = Array.from({ length: 2_000 }, (_, i) => like(`u${i % 37}`, `page "${i}" \\ 🦆`));
    const { entryIds, versions } = await store.append(streams.activity, events);
    expect(entryIds).toHaveLength(2_000);
    const stored = await xrange(streams.activity);
    expect(stored.map((e) => e.id)).toEqual(entryIds);
    const objects = stored.map((e) => (JSON.parse(field(e, 'data') as string) as { object: string }).object);
    expect(objects).toEqual(events.map((e) => (e.data as { object: string }).object));
    expect(versions['u0']).toBe(Math.ceil(2_000 / 37));
  });
});
