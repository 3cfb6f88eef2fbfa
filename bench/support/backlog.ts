import type { Redis } from 'ioredis';
import type { EventInput } from '@redsource/event-store';
import type { ProfileStreams } from '../../apps/profile-api/src/domain/events.ts';
import { randomCommands, type RawCommand } from '../../test/support/model.ts';

/** Stream names of one copy of a backlog; `tag` keeps copies apart on the one bench Redis. */
export function benchStreams(tag: string): ProfileStreams {
  return { updates: `user_updates_${tag}`, activity: `user_activity_${tag}`, friends: `user_friends_${tag}` };
}

export const streamList = (s: ProfileStreams): string[] => [s.updates, s.activity, s.friends];

/** Generated with placeholder stream names, so every copy of a backlog holds the very same entries. */
const PLACEHOLDER: ProfileStreams = { updates: 'U', activity: 'A', friends: 'F' };

function rename(copy: ProfileStreams, placeholder: string): string {
  return placeholder === 'U' ? copy.updates : placeholder === 'A' ? copy.activity : copy.friends;
}

/**
 * The profile app's events in the flat form, as the seed and any client XADD them (registrations,
 * updates, deletes, likes/unlikes, other activity, friends added/removed: test/support/model.ts),
 * generated in chunks so a million of them never sit in memory at once.
 */
export function* commandChunks(count: number, users: number, seed: number, chunk = 10_000): Generator<RawCommand[]> {
  for (let done = 0, i = 0; done < count; done += chunk, i++) {
    yield randomCommands(PLACEHOLDER, Math.min(chunk, count - done), users, seed * 1_000 + i);
  }
}

/** The same `count` events into each copy, pipelined (1000 XADDs per round trip, a few in flight, one connection: order kept). */
export async function loadBacklog(
  redis: Redis,
  copies: readonly ProfileStreams[],
  count: number,
  users: number,
  seed: number,
): Promise<void> {
  const inFlight: Promise<unknown>[] = [];
  for (const commands of commandChunks(count, users, seed)) {
    for (const copy of copies) {
      for (let i = 0; i < commands.length; i += 1_000) {
        const pipeline = redis.pipeline();
        for (const [stream, ...fields] of commands.slice(i, i + 1_000))
          pipeline.xadd(rename(copy, stream), '*', ...fields);
        inFlight.push(pipeline.exec().then(throwFirstError));
        if (inFlight.length >= 4) await inFlight.shift();
      }
    }
  }
  await Promise.all(inFlight);
}

export function throwFirstError(replies: [Error | null, unknown][] | null): void {
  for (const [error] of replies ?? []) if (error) throw error;
}

/** Typed events of the activity stream for RedisEventStore.append, from the same generator. */
export function activityEvents(count: number, users: number, seed: number): EventInput[] {
  const events: EventInput[] = [];
  for (let i = 0; events.length < count; i++) {
    for (const [stream, ...fields] of randomCommands(PLACEHOLDER, 10_000, users, seed * 1_000 + i)) {
      if (stream !== 'A' || events.length >= count) continue;
      const data: Record<string, string> = {};
      let type = '';
      for (let f = 0; f + 1 < fields.length; f += 2) {
        const [name, value] = [fields[f] as string, fields[f + 1] as string];
        if (name === 'command' || name === 'action') type = value;
        else data[name] = value;
      }
      events.push({ type, data });
    }
  }
  return events;
}

/** Flat entry fields → record. */
export function flatRecord(fields: readonly string[]): Record<string, string> {
  const record: Record<string, string> = {};
  for (let i = 0; i + 1 < fields.length; i += 2) record[fields[i] as string] = fields[i + 1] as string;
  return record;
}

/**
 * What the hand-written baselines write for one flat entry: ONE Redis command on the user's hash,
 * in the same hash layout as redsource (HSET of the personal fields, HDEL on delete/unlike/remove,
 * HSET of a set member, HINCRBY of an activity counter). No validation, no ordering guarantee,
 * no exactly-once: that is what they leave out.
 */
export function baselineWrite(
  streams: ProfileStreams,
  keyPrefix: string,
  stream: string,
  entryId: string,
  fields: readonly string[],
): [command: string, args: string[]] {
  const r = flatRecord(fields);
  const key = `${keyPrefix}${r['user_id'] ?? ''}`;
  const command = r['command'] ?? r['action'] ?? '';
  if (stream === streams.updates) {
    if (command === 'delete') return ['hdel', [key, '_exists']];
    const args = [key];
    if (command === 'register') args.push('_exists', '1');
    for (const [name, value] of Object.entries(r)) {
      if (name !== 'user_id' && name !== 'command' && name !== 'action')
        args.push(`f:${name === 'surename' ? 'surname' : name}`, JSON.stringify(value));
    }
    return ['hset', args];
  }
  if (stream === streams.activity) {
    const page = r['object'] ?? r['page'] ?? '';
    if (command === 'like') return ['hset', [key, `s:likedPages:${page}`, entryId]];
    if (command === 'unlike') return ['hdel', [key, `s:likedPages:${page}`]];
    return ['hincrby', [key, `c:${command}`, '1']];
  }
  const friend = `s:friends:${r['friend_id'] ?? ''}`;
  return command === 'remove' ? ['hdel', [key, friend]] : ['hset', [key, friend, entryId]];
}
