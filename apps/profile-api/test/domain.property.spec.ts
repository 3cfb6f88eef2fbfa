import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { EventCodec, type RecordedEvent } from '@redsource/event-store';
import { DEFAULT_STREAMS as streams, profileCatalog } from '../src/domain/events.ts';
import { emptyProfile, foldProfile, stateToProfile, type ProfileState } from '../src/domain/fold.ts';
import { profileSchema } from '../src/domain/profile.ts';
import { anyName, personalFieldName, userId } from '../../../test/support/arbitraries.ts';

const codec = new EventCodec(profileCatalog(streams));
const RESERVED = new Set(['id', 'userId', 'friends', 'likedPages', 'activity', 'name']);

/** One flat command of one user, as any client XADDs it, with names from anywhere. */
type Command =
  | { kind: 'register' | 'update'; fields: [string, string][] }
  | { kind: 'delete' }
  | { kind: 'like' | 'unlike'; page: string }
  | { kind: 'activity'; command: string }
  | { kind: 'add' | 'remove'; friend: string };

const fieldList = (min: number) =>
  fc.uniqueArray(
    fc.tuple(
      personalFieldName().filter((n) => !RESERVED.has(n)),
      fc.string(),
    ),
    { selector: ([n]) => n, minLength: min, maxLength: 4 },
  );
const command: fc.Arbitrary<Command> = fc.oneof(
  fieldList(0).map((fields) => ({ kind: 'register' as const, fields })),
  fieldList(1).map((fields) => ({ kind: 'update' as const, fields })),
  fc.constant({ kind: 'delete' as const }),
  fc
    .tuple(
      fc.constantFrom('like' as const, 'unlike' as const),
      anyName().filter((p) => p !== ''),
    )
    .map(([kind, page]) => ({ kind, page })),
  fc
    .oneof(anyName(), personalFieldName())
    .filter((c) => /^[A-Za-z_][A-Za-z0-9_]{0,63}$/.test(c) && c !== 'like' && c !== 'unlike')
    .map((c) => ({ kind: 'activity' as const, command: c })),
  fc
    .tuple(
      fc.constantFrom('add' as const, 'remove' as const),
      userId().filter((f) => f !== 'me'),
    )
    .map(([kind, friend]) => ({ kind, friend })),
);

function toEntry(c: Command): [stream: string, fields: string[]] {
  const head = ['user_id', 'me'];
  switch (c.kind) {
    case 'register':
      return [streams.updates, [...head, 'command', 'register', 'name', 'N', ...c.fields.flat()]];
    case 'update':
      return [streams.updates, [...head, 'command', 'update', ...c.fields.flat()]];
    case 'delete':
      return [streams.updates, [...head, 'command', 'delete']];
    case 'like':
    case 'unlike':
      return [streams.activity, [...head, 'command', c.kind, 'page', c.page]];
    case 'activity':
      return [streams.activity, [...head, 'command', c.command]];
    case 'add':
    case 'remove':
      return [streams.friends, [...head, 'command', c.kind, 'friend_id', c.friend]];
  }
}

/** The reference, with Maps only: no object ever holds an input name as a key. */
function reference(commands: readonly Command[]) {
  let exists = false;
  let fields = new Map<string, string>();
  const friends: string[] = [];
  const pages: string[] = [];
  const activity = new Map<string, number>();
  const count = (name: string) => activity.set(name, (activity.get(name) ?? 0) + 1);
  const add = (list: string[], member: string) => list.includes(member) || list.push(member);
  const remove = (list: string[], member: string) => list.includes(member) && list.splice(list.indexOf(member), 1);
  for (const c of commands) {
    if (c.kind === 'register') [exists, fields] = [true, new Map([['name', 'N'], ...c.fields])];
    else if (c.kind === 'update') for (const [n, v] of c.fields) fields.set(n, v);
    else if (c.kind === 'delete') [exists, fields] = [false, new Map<string, string>()];
    else if (c.kind === 'activity') count(c.command);
    else if (c.kind === 'like' || c.kind === 'unlike') {
      count(c.kind);
      if (c.kind === 'like') add(pages, c.page);
      else remove(pages, c.page);
    } else if (c.kind === 'add') add(friends, c.friend);
    else if (c.kind === 'remove') remove(friends, c.friend);
  }
  return { exists, fields, friends, pages, activity };
}

const own = (o: object) => new Map(Object.keys(o).map((k) => [k, (o as Record<string, unknown>)[k]]));

describe('the profile domain, property-based: decode then fold equals a Map-only reference, whatever the names', () => {
  it('any command sequence of one user, names from anywhere (prototype members, unicode, lone surrogates, long)', () => {
    fc.assert(
      fc.property(fc.array(command, { maxLength: 25 }), (commands) => {
        let state: ProfileState = emptyProfile;
        commands.forEach((c, i) => {
          const [stream, fields] = toEntry(c);
          const event = codec.tryDecode(stream, `1-${i}`, fields);
          expect(event, JSON.stringify(fields)).not.toBeInstanceOf(Error);
          state = foldProfile(state, event as RecordedEvent, streams);
        });
        const want = reference(commands);
        expect(state.exists).toBe(want.exists);
        expect(own(state.fields)).toEqual(want.fields);
        expect(state.friends).toEqual(want.friends);
        expect(state.likedPages).toEqual(want.pages);
        expect(own(state.activity)).toEqual(want.activity);
        // What GET serves (JSON.stringify of the profile, as the route does): the same names, in the documented shape.
        const profile = stateToProfile('me', state);
        if (want.exists) {
          const served = JSON.parse(JSON.stringify(profile)) as Record<string, unknown>;
          expect(profileSchema.safeParse(served).success).toBe(true);
          for (const [n, v] of want.fields) expect(Object.hasOwn(served, n) && served[n], n).toBe(v);
          expect(own(served['activity'] as object)).toEqual(want.activity);
        } else {
          expect(profile).toBeUndefined();
        }
      }),
      { numRuns: 300 },
    );
  });
});
