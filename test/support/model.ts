import { isUtf8 } from 'node:buffer';
import type { Redis } from 'ioredis';
import type { RecordedEvent, RedisEventStore } from '@redsource/event-store';
import type { SnapshotStore } from '@redsource/snapshot-store';
import { foldLog, type ProfileState } from '../../apps/profile-api/src/domain/fold.ts';
import type { ProfileStreams } from '../../apps/profile-api/src/domain/events.ts';

/** A small deterministic PRNG, so a failing model run can be repeated from its seed. */
export function prng(seed: number) {
  let s = seed >>> 0;
  const next = () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  return {
    next,
    int: (n: number) => Math.floor(next() * n),
    pick: <T>(items: readonly T[]) => items[Math.floor(next() * items.length)] as T,
  };
}

export type RawCommand = [stream: string, ...fields: string[]];

/**
 * Random flat-form events, as any client would XADD them: registrations, re-registrations,
 * updates, deletes, likes/unlikes, other activity, friends added and removed. Order-sensitive
 * pairs (like then unlike, add then remove, update then update) make reordering visible, the
 * activity counters make double application visible.
 */
export function randomCommands(streams: ProfileStreams, count: number, users: number, seed: number): RawCommand[] {
  const r = prng(seed);
  const pages = ['p1', 'p2', 'p3', 'p4', 'p5'];
  const commands: RawCommand[] = [];
  for (let i = 0; i < count; i++) {
    const user = String(1 + r.int(users));
    const roll = r.next();
    if (roll < 0.3) {
      const kind = r.pick(['register', 'register', 'update', 'update', 'update', 'delete']);
      if (kind === 'register')
        commands.push([streams.updates, 'user_id', user, 'command', 'register', 'name', `N${i}`, 'surename', `S${i}`]);
      else if (kind === 'update')
        commands.push([
          streams.updates,
          'user_id',
          user,
          'action',
          'update',
          r.pick(['name', 'surname', 'birth_date']),
          `U${i}`,
        ]);
      else commands.push([streams.updates, 'user_id', user, 'command', 'delete']);
    } else if (roll < 0.65) {
      const kind = r.pick(['like', 'unlike', 'like', 'comment', 'kick', 'dislike']);
      commands.push([streams.activity, 'user_id', user, 'command', kind, r.pick(['object', 'page']), r.pick(pages)]);
    } else {
      let friend = String(1 + r.int(users));
      if (friend === user) friend = String(Number(user) + users);
      commands.push([
        streams.friends,
        'user_id',
        user,
        'command',
        r.pick(['add', 'add', 'remove']),
        'friend_id',
        friend,
      ]);
    }
  }
  return commands;
}

/** XADDs raw commands pipelined in chunks; returns the entry ids. */
export async function xaddAll(redis: Redis, commands: readonly RawCommand[], chunk = 500): Promise<string[]> {
  const ids: string[] = [];
  for (let i = 0; i < commands.length; i += chunk) {
    const pipeline = redis.pipeline();
    for (const [stream, ...fields] of commands.slice(i, i + chunk)) pipeline.xadd(stream, '*', ...fields);
    for (const [error, id] of (await pipeline.exec()) ?? []) {
      if (error) throw error;
      ids.push(String(id));
    }
  }
  return ids;
}

/**
 * The pure fold of everything in the streams (valid events only), per user. With `redis`, entries
 * whose bytes are not UTF-8 are left out too, as the processors dead-letter them (RS_NOT_UTF8).
 */
export async function referenceFold(
  eventStore: RedisEventStore,
  streams: ProfileStreams,
  redis?: Redis,
): Promise<Map<string, ProfileState>> {
  const events: RecordedEvent[] = [];
  for (const stream of [streams.updates, streams.activity, streams.friends]) {
    const notUtf8 = redis ? await notUtf8Entries(redis, stream) : new Set<string>();
    for await (const event of eventStore.read(stream, { onInvalid: () => undefined }))
      if (!notUtf8.has(event.entryId)) events.push(event);
  }
  return foldLog(events, streams);
}

async function notUtf8Entries(redis: Redis, stream: string): Promise<Set<string>> {
  const ids = new Set<string>();
  for (const [id, fields] of await redis.xrangeBuffer(stream, '-', '+'))
    if (!fields.every((f) => isUtf8(f))) ids.add(id.toString());
  return ids;
}

/** Every difference between the snapshots in Redis and the reference fold, as readable lines. */
export async function snapshotDifferences(
  snapshots: SnapshotStore,
  expected: Map<string, ProfileState>,
): Promise<string[]> {
  const ids = [...expected.keys()];
  const actual = await snapshots.readMany(ids);
  const differences: string[] = [];
  ids.forEach((id, i) => {
    const want = expected.get(id) as ProfileState;
    const got = actual[i];
    const normalised = got && {
      exists: got.exists,
      fields: got.fields,
      friends: got.sets['friends'] ?? [],
      likedPages: got.sets['likedPages'] ?? [],
      activity: got.counters,
    };
    const wantJson = JSON.stringify(sortKeys(want));
    const gotJson = JSON.stringify(
      sortKeys(normalised ?? { exists: false, fields: {}, friends: [], likedPages: [], activity: {} }),
    );
    if (wantJson !== gotJson) differences.push(`user ${id}: want ${wantJson} got ${gotJson}`);
  });
  return differences;
}

function sortKeys(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(sortKeys);
  if (value && typeof value === 'object') {
    return Object.fromEntries(
      Object.entries(value)
        .sort(([a], [b]) => (a < b ? -1 : 1))
        .map(([k, v]) => [k, sortKeys(v)]),
    );
  }
  return value;
}
