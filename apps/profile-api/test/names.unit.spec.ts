import { describe, expect, it } from 'vitest';
import { EventCodec, EventValidationError, type RecordedEvent } from '@redsource/event-store';
import { HandlerRegistry } from '@redsource/processor';
import { encodeMutations } from '@redsource/snapshot-store';
import { profileCatalog } from '../src/domain/events.ts';
import { foldLog, stateToProfile } from '../src/domain/fold.ts';
import { profileHandlers } from '../src/domain/handlers.ts';

/** Names Object.prototype has: in an event they are just names (issue 9, item 4). */
const PROTOTYPE_NAMES = [
  'constructor',
  'toString',
  'valueOf',
  'hasOwnProperty',
  '__proto__',
  'isPrototypeOf',
  '__defineGetter__',
];

const codec = new EventCodec(profileCatalog());
let seq = 0;
const flat = (stream: string, ...fields: string[]): RecordedEvent => codec.decode(stream, `1-${seq++}`, fields);
/** The envelope form, with `data` written as JSON text (JSON.parse makes an own `__proto__` key of it). */
const envelope = (stream: string, type: string, dataJson: string): RecordedEvent =>
  codec.decode(stream, `2-${seq++}`, [
    'specversion',
    '1.0',
    'id',
    `e${seq}`,
    'source',
    'test',
    'type',
    type,
    'data',
    dataJson,
  ]);

/** The profile as the API serialises it: JSON text, so an own `__proto__` key is visible. */
const served = (events: RecordedEvent[], userId: string) => {
  const state = foldLog(events).get(userId);
  const profile = state && stateToProfile(userId, state);
  return profile === undefined ? undefined : (JSON.parse(JSON.stringify(profile)) as Record<string, unknown>);
};
const own = (value: unknown, key: string) =>
  value !== null && typeof value === 'object' && Object.hasOwn(value, key)
    ? (value as Record<string, unknown>)[key]
    : 'missing';

describe('names that are Object.prototype members', () => {
  for (const name of PROTOTYPE_NAMES) {
    it(`'${name}' as a personal field, in both wire forms, is kept as written`, () => {
      const viaFlat = flat('user_updates', 'user_id', '20', 'command', 'register', 'name', 'S', name, 'c');
      expect(Object.keys(viaFlat.data as object)).toEqual(['userId', 'name', name]);
      expect(own(viaFlat.data, name)).toBe('c');
      const viaEnvelope = envelope(
        'user_updates',
        'register',
        `{"userId":"20","name":"S",${JSON.stringify(name)}:"c"}`,
      );
      expect(Object.keys(viaEnvelope.data as object)).toEqual(['userId', 'name', name]);
      expect(own(viaEnvelope.data, name)).toBe('c');
      for (const event of [viaFlat, viaEnvelope]) {
        const profile = served([event], '20');
        expect(own(profile, name)).toBe('c');
        expect(own(profile, 'name')).toBe('S');
      }
      const update = flat('user_updates', 'user_id', '20', 'command', 'update', name, 'd');
      expect(own(served([viaFlat, update], '20'), name)).toBe('d');
    });

    it(`'${name}' as an activity command, a liked page and a friend-free counter folds as written`, () => {
      const events = [
        flat('user_updates', 'user_id', '10', 'command', 'register', 'name', 'N'),
        flat('user_activity', 'user_id', '10', 'command', name),
        flat('user_activity', 'user_id', '10', 'command', name, 'object', 'x'),
        envelope('user_activity', name, '{"userId":"10"}'),
        flat('user_activity', 'user_id', '10', 'command', 'like', 'object', name),
        envelope('user_activity', 'like', `{"userId":"10","object":${JSON.stringify(name)}}`),
      ];
      const profile = served(events, '10');
      expect(own(own(profile, 'activity'), name)).toBe(3);
      expect(own(own(profile, 'activity'), 'like')).toBe(2);
      expect(own(profile, 'likedPages')).toEqual([name]);
      expect(
        served([...events, flat('user_activity', 'user_id', '10', 'command', 'unlike', 'page', name)], '10')?.[
          'likedPages'
        ],
      ).toEqual([]);
    });
  }

  it('keeps the other fields of an activity event, __proto__ included, in the decoded data', () => {
    const event = envelope('user_activity', 'comment', '{"userId":"1","__proto__":{"polluted":1},"constructor":"c"}');
    expect(Object.keys(event.data as object).sort()).toEqual(['__proto__', 'constructor', 'userId']);
    expect(own(event.data, '__proto__')).toEqual({ polluted: 1 });
    expect(({} as Record<string, unknown>)['polluted']).toBeUndefined();
  });

  it('keeps an envelope extension attribute named __proto__ in the metadata', () => {
    const event = codec.decode('user_activity', '3-0', [
      'specversion',
      '1.0',
      'type',
      'kick',
      '__proto__',
      'x',
      'data',
      '{"userId":"1"}',
    ]);
    expect(own(event.metadata, '__proto__')).toBe('x');
  });

  it('turns such names into mutations and hash field names as written', () => {
    const handlers: HandlerRegistry = profileHandlers();
    const event = flat(
      'user_updates',
      'user_id',
      '20',
      'command',
      'register',
      'name',
      'S',
      '__proto__',
      'p',
      'constructor',
      'c',
    );
    const changes = handlers.run(event) as readonly { mutations: Parameters<typeof encodeMutations>[0] }[];
    const out: (string | number)[] = [];
    for (const change of changes) encodeMutations(change.mutations, out);
    expect(out).toEqual(['C', 'F', 'name', '"S"', 'F', '__proto__', '"p"', 'F', 'constructor', '"c"', 'X']);
  });

  it('finds no handler through an inherited name', () => {
    const registry = new HandlerRegistry().on('s', 'a', () => undefined);
    for (const name of PROTOTYPE_NAMES) expect(registry.find('s', name)).toBeUndefined();
    expect(registry.find('constructor', 'a')).toBeUndefined();
  });

  it('rejects no event type by an inherited schema: an unknown type on a stream without * names it', () => {
    const error = (() => {
      try {
        codec.decode('user_friends', '4-0', ['user_id', '1', 'command', 'constructor', 'friend_id', '2']);
      } catch (e) {
        return e;
      }
      return undefined;
    })();
    expect(error).toBeInstanceOf(Error);
    expect((error as Error).message).toContain("'constructor'");
    expect((error as Error).message).not.toContain('native code');
  });
});

describe('synonyms', () => {
  it('names both spellings as the entry wrote them when a field and its synonym disagree', () => {
    for (const [first, second] of [
      ['surname', 'surename'],
      ['surename', 'surname'],
      ['page', 'object'],
    ] as const) {
      const stream = first === 'page' ? 'user_activity' : 'user_updates';
      const command = stream === 'user_activity' ? 'like' : 'register';
      let caught: unknown;
      try {
        codec.decode(stream, '5-0', ['user_id', '1', 'command', command, 'name', 'N', first, 'a', second, 'b']);
      } catch (e) {
        caught = e;
      }
      expect(caught).toBeInstanceOf(EventValidationError);
      expect((caught as Error).message).toContain(`both '${first}' and its synonym '${second}'`);
    }
  });

  it('accepts a field and its synonym with the same value', () => {
    expect(
      flat('user_updates', 'user_id', '1', 'command', 'register', 'name', 'N', 'surname', 'D', 'surename', 'D').data,
    ).toEqual({ userId: '1', name: 'N', surname: 'D' });
  });

  it('keeps a field literally named __conflict as a personal field', () => {
    expect(
      own(
        flat('user_updates', 'user_id', '1', 'command', 'register', 'name', 'N', '__conflict', 'x').data,
        '__conflict',
      ),
    ).toBe('x');
  });
});
