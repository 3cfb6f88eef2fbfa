import { describe, expect, it } from 'vitest';
import {
  EventCodec,
  EventStoreError,
  EventValidationError,
  UndecodableEntryError,
  UnknownEventTypeError,
  type RecordedEvent,
} from '@redsource/event-store';
import { profileCatalog, DEFAULT_STREAMS } from '../../../apps/profile-api/src/domain/events.ts';

const codec = new EventCodec(profileCatalog());
const UPDATES = DEFAULT_STREAMS.updates;
const FRIENDS = DEFAULT_STREAMS.friends;
const ACTIVITY = DEFAULT_STREAMS.activity;

/** The seed's flat entry: `XADD user_updates * user_id 1 command register name Duffy surename Duck`. */
const SEED_REGISTER = ['user_id', '1', 'command', 'register', 'name', 'Duffy', 'surename', 'Duck'];

/** Runs `fn`, expects it to throw, and returns what it threw. */
function thrown(fn: () => unknown): unknown {
  try {
    fn();
  } catch (error) {
    return error;
  }
  throw new Error('expected the call to throw');
}

function decodeError(stream: string, fields: readonly string[]): unknown {
  return thrown(() => codec.decode(stream, '5-0', fields));
}

describe('both wire forms decode to the same event', () => {
  it('decodes the seed flat form, mapping user_id/surename to the canonical names', () => {
    const event = codec.decode(UPDATES, '1-0', SEED_REGISTER);
    expect(event.type).toBe('register');
    expect(event.data).toEqual({ userId: '1', name: 'Duffy', surname: 'Duck' });
    expect(event.format).toBe('flat');
    expect(event.stream).toBe(UPDATES);
    expect(event.entryId).toBe('1-0');
    expect(event.metadata).toEqual({});
  });

  it('decodes an envelope produced by encode() to the same type and data as the flat form', () => {
    const { fields } = codec.encode(UPDATES, {
      type: 'register',
      data: { userId: '1', name: 'Duffy', surname: 'Duck' },
    });
    expect(fields).toContain('specversion');
    const envelope = codec.decode(UPDATES, '2-0', fields);
    const flat = codec.decode(UPDATES, '1-0', SEED_REGISTER);
    expect(envelope.format).toBe('envelope');
    expect(envelope.type).toBe(flat.type);
    expect(envelope.data).toEqual(flat.data);
    expect(envelope.data).toEqual({ userId: '1', name: 'Duffy', surname: 'Duck' });
  });

  it('encodes seed spellings given to encode() as canonical data in the envelope', () => {
    const { fields, subject } = codec.encode(UPDATES, {
      type: 'register',
      data: { user_id: 1, name: 'Duffy', surename: 'Duck' },
    });
    expect(subject).toBe('1');
    const event = codec.decode(UPDATES, '3-0', fields);
    expect(event.data).toEqual({ userId: '1', name: 'Duffy', surname: 'Duck' });
  });

  it('carries the envelope attributes (id, source, subject, time) and extensions as metadata', () => {
    const { fields, eventId } = codec.encode(UPDATES, {
      type: 'update',
      data: { userId: '7', city: 'Paris' },
      metadata: { id: 'evt-1', source: 'test-suite', time: '2020-01-02T03:04:05.000Z' },
    });
    expect(eventId).toBe('evt-1');
    const event = codec.decode(UPDATES, '4-0', [...fields, 'traceparent', 'abc']);
    expect(event.metadata).toEqual({
      id: 'evt-1',
      source: 'test-suite',
      subject: '7',
      time: '2020-01-02T03:04:05.000Z',
      traceparent: 'abc',
    });
    expect(event.data).toEqual({ userId: '7', city: 'Paris' });
  });
});

describe('flat form type fields', () => {
  it('accepts `action` as a synonym of `command`', () => {
    const withAction = codec.decode(UPDATES, '1-0', [
      'user_id',
      '1',
      'action',
      'register',
      'name',
      'Duffy',
      'surename',
      'Duck',
    ]);
    const withCommand = codec.decode(UPDATES, '1-0', SEED_REGISTER);
    expect(withAction.type).toBe('register');
    expect(withAction.data).toEqual(withCommand.data);
  });

  it('accepts both `command` and `action` when they agree, and keeps neither in the data', () => {
    const event = codec.decode(FRIENDS, '1-0', ['user_id', '1', 'command', 'add', 'action', 'add', 'friend_id', '2']);
    expect(event.type).toBe('add');
    expect(event.data).toEqual({ userId: '1', friendId: '2' });
  });

  it('takes the type field names from the options', () => {
    const custom = new EventCodec(profileCatalog(), { typeFields: ['kind'] });
    expect(custom.decode(FRIENDS, '1-0', ['user_id', '1', 'kind', 'add', 'friend_id', '2']).type).toBe('add');
    expect(custom.tryDecode(FRIENDS, '1-0', ['user_id', '1', 'command', 'add', 'friend_id', '2'])).toBeInstanceOf(
      UndecodableEntryError,
    );
  });
});

describe('envelope data survives encode → decode exactly', () => {
  it('keeps nested objects, arrays, numbers, booleans and nulls', () => {
    const data = {
      userId: '42',
      name: 'Daisy',
      address: { street: 'Main', numbers: [1, 2.5, -3], geo: { lat: 1.25, lon: null } },
      tags: ['a', { deep: [[true, false], { x: 'y' }] }],
      active: true,
    };
    const { fields } = codec.encode(UPDATES, { type: 'register', data });
    const event = codec.decode(UPDATES, '9-0', fields);
    // The data is a null-prototype object (a field may be called __proto__): compare its own keys and values.
    expect({ ...(event.data as object) }).toStrictEqual(data);
  });

  it('keeps nested values of a catch-all activity type', () => {
    const data = { userId: '3', object: 'page', extra: { list: [{ a: 1 }, { b: [2, 3] }] } };
    const { fields } = codec.encode(ACTIVITY, { type: 'comment', data });
    const event = codec.decode(ACTIVITY, '9-1', fields);
    expect(event.type).toBe('comment');
    // The data is a null-prototype object (a field may be called __proto__): compare its own keys and values.
    expect({ ...(event.data as object) }).toStrictEqual(data);
  });
});

describe('entries that cannot be decoded throw UndecodableEntryError', () => {
  it.each([
    ['an odd number of field/value items', ['user_id', '1', 'command'], /odd number/],
    ['a field given twice', ['user_id', '1', 'command', 'register', 'name', 'A', 'name', 'B'], /'name' appears twice/],
    ['no type field', ['user_id', '1', 'name', 'Duffy'], /no type field/],
    [
      'command and action that disagree',
      ['user_id', '1', 'command', 'register', 'action', 'update', 'name', 'X'],
      /disagree/,
    ],
  ])('rejects %s', (_label, fields, reason) => {
    const error = decodeError(UPDATES, fields);
    expect(error).toBeInstanceOf(UndecodableEntryError);
    const undecodable = error as UndecodableEntryError;
    expect(undecodable.code).toBe('RS_ENTRY_UNDECODABLE');
    expect(undecodable.stream).toBe(UPDATES);
    expect(undecodable.entryId).toBe('5-0');
    expect(undecodable.reason).toMatch(reason);
  });

  it('rejects envelope data that is not JSON', () => {
    const error = decodeError(UPDATES, ['specversion', '1.0', 'type', 'register', 'data', '{"userId": "1", name']);
    expect(error).toBeInstanceOf(UndecodableEntryError);
    expect((error as UndecodableEntryError).reason).toMatch(/not valid JSON/);
  });

  it('rejects an envelope without a type attribute', () => {
    const error = decodeError(UPDATES, ['specversion', '1.0', 'data', '{"userId":"1","name":"A"}']);
    expect(error).toBeInstanceOf(UndecodableEntryError);
    expect((error as UndecodableEntryError).reason).toMatch(/type/);
  });
});

describe('events that break their schema throw EventValidationError naming the field', () => {
  it('rejects a register without name', () => {
    const error = decodeError(UPDATES, ['user_id', '1', 'command', 'register', 'surename', 'Duck']);
    expect(error).toBeInstanceOf(EventValidationError);
    const invalid = error as EventValidationError;
    expect(invalid.code).toBe('RS_EVENT_INVALID');
    expect(invalid.eventType).toBe('register');
    expect(invalid.stream).toBe(UPDATES);
    expect(invalid.issues.map((i) => i.field)).toEqual(['name']);
    expect(invalid.message).toContain('name');
  });

  it('rejects a friend add with a malformed friend_id', () => {
    const error = decodeError(FRIENDS, ['user_id', '1', 'command', 'add', 'friend_id', 'not an id!']);
    expect(error).toBeInstanceOf(EventValidationError);
    expect((error as EventValidationError).issues.map((i) => i.field)).toEqual(['friendId']);
  });

  it('rejects a friend add without friend_id', () => {
    const error = decodeError(FRIENDS, ['user_id', '1', 'command', 'add']);
    expect(error).toBeInstanceOf(EventValidationError);
    expect((error as EventValidationError).issues.map((i) => i.field)).toEqual(['friendId']);
  });

  it('rejects a user befriending themselves', () => {
    const error = decodeError(FRIENDS, ['user_id', '1', 'command', 'add', 'friend_id', '1']);
    expect(error).toBeInstanceOf(EventValidationError);
    expect((error as EventValidationError).issues.map((i) => i.field)).toEqual(['friendId']);
  });

  it('rejects an envelope whose data breaks the schema', () => {
    const error = decodeError(UPDATES, ['specversion', '1.0', 'type', 'register', 'data', '{"userId":"1"}']);
    expect(error).toBeInstanceOf(EventValidationError);
    expect((error as EventValidationError).issues.map((i) => i.field)).toEqual(['name']);
  });

  it('refuses to encode an invalid event', () => {
    const error = thrown(() => codec.encode(UPDATES, { type: 'register', data: { userId: 'bad id', name: 'X' } }));
    expect(error).toBeInstanceOf(EventValidationError);
    expect((error as EventValidationError).issues.map((i) => i.field)).toEqual(['userId']);
  });
});

describe('event types the stream does not declare', () => {
  it('throws UnknownEventTypeError for an unknown type on user_updates', () => {
    const error = decodeError(UPDATES, ['user_id', '1', 'command', 'explode']);
    expect(error).toBeInstanceOf(UnknownEventTypeError);
    const unknown = error as UnknownEventTypeError;
    expect(unknown.code).toBe('RS_EVENT_TYPE_UNKNOWN');
    expect(unknown.eventType).toBe('explode');
    expect(unknown.stream).toBe(UPDATES);
  });

  it('throws UnknownEventTypeError for an unknown type in an envelope too', () => {
    const error = decodeError(UPDATES, ['specversion', '1.0', 'type', 'explode', 'data', '{"userId":"1"}']);
    expect(error).toBeInstanceOf(UnknownEventTypeError);
  });

  it('accepts any type on user_activity through its catch-all schema', () => {
    const event = codec.decode(ACTIVITY, '1-0', ['user_id', '1', 'command', 'kick', 'object', 'ball']);
    expect(event.type).toBe('kick');
    expect(event.data).toEqual({ userId: '1', object: 'ball' });
  });

  it("refuses a type literally named '*' on user_activity: '*' names its catch-all schema, not a type, so the type rule applies", () => {
    const error = decodeError(ACTIVITY, ['user_id', '1', 'command', '*']);
    expect(error).toBeInstanceOf(EventValidationError);
    expect((error as EventValidationError).issues.map((i) => i.field)).toEqual(['type']);
  });
});

describe('tryDecode', () => {
  it('returns the error instead of throwing it', () => {
    const cases: [string, string[], new (...args: never[]) => EventStoreError][] = [
      [UPDATES, ['user_id', '1', 'command'], UndecodableEntryError],
      [UPDATES, ['user_id', '1', 'command', 'register'], EventValidationError],
      [UPDATES, ['user_id', '1', 'command', 'explode'], UnknownEventTypeError],
    ];
    for (const [stream, fields, type] of cases) {
      let result: RecordedEvent | EventStoreError | undefined;
      expect(() => {
        result = codec.tryDecode(stream, '1-0', fields);
      }).not.toThrow();
      expect(result).toBeInstanceOf(type);
    }
  });

  it('returns the event when the entry decodes', () => {
    const result = codec.tryDecode(UPDATES, '1-0', SEED_REGISTER);
    expect(result).not.toBeInstanceOf(Error);
    expect((result as RecordedEvent).data).toEqual({ userId: '1', name: 'Duffy', surname: 'Duck' });
  });
});
