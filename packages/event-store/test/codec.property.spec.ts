import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { EventCodec, EventStoreError, EventValidationError, type RecordedEvent } from '@redsource/event-store';
import { profileCatalog, type ProfileStreams } from '../../../apps/profile-api/src/domain/events.ts';
import { anyName, distinctNames, FLAT_RESERVED, personalFieldName, userId } from '../../../test/support/arbitraries.ts';

const streams: ProfileStreams = { updates: 'user_updates', activity: 'user_activity', friends: 'user_friends' };
const codec = new EventCodec(profileCatalog(streams));
const PERSONAL_FIELD = /^[A-Za-z_][A-Za-z0-9_]{0,63}$/;
const RESERVED = new Set(['id', 'userId', 'friends', 'likedPages', 'activity']);

const ownEntries = (data: unknown) =>
  Object.keys(data as object).map((k) => [k, (data as Record<string, unknown>)[k]] as const);

describe('EventCodec, property-based: names are just names, any input decodes or is refused with a reason', () => {
  it('a flat activity entry keeps every field, under any name, exactly as written; a command is a counter name or refused, named', () => {
    fc.assert(
      fc.property(
        userId(),
        fc.oneof(anyName(), personalFieldName()).filter((c) => c !== 'like' && c !== 'unlike'),
        distinctNames(anyName(), FLAT_RESERVED),
        fc.array(fc.string(), { minLength: 5, maxLength: 5 }),
        (user, command, names, values) => {
          const fields = ['user_id', user, 'command', command, ...names.flatMap((n, i) => [n, values[i] as string])];
          const decoded = codec.tryDecode(streams.activity, '1-0', fields);
          if (!PERSONAL_FIELD.test(command)) {
            expect(decoded).toBeInstanceOf(EventValidationError);
            expect((decoded as EventValidationError).issues.map((i) => i.field)).toEqual(['type']);
            return;
          }
          const event = decoded as RecordedEvent;
          expect(event.type).toBe(command);
          expect(Object.getPrototypeOf(event.data)).toBeNull();
          expect(new Map(ownEntries(event.data))).toEqual(
            new Map([['userId', user], ...names.map((n, i) => [n, values[i]] as const)]),
          );
        },
      ),
    );
  });

  it('a flat registration decodes exactly when every personal field name is allowed, else names the field', () => {
    fc.assert(
      fc.property(
        userId(),
        fc.string({ minLength: 1 }),
        distinctNames(fc.oneof(anyName(), personalFieldName()), FLAT_RESERVED),
        (user, name, names) => {
          const fields = ['user_id', user, 'command', 'register', 'name', name, ...names.flatMap((n) => [n, `v:${n}`])];
          const decoded = codec.tryDecode(streams.updates, '1-0', fields);
          const refused = names.filter((n) => !PERSONAL_FIELD.test(n) || RESERVED.has(n));
          if (refused.length === 0) {
            expect(decoded).not.toBeInstanceOf(Error);
            expect(new Map(ownEntries((decoded as RecordedEvent).data))).toEqual(
              new Map([['userId', user], ['name', name], ...names.map((n) => [n, `v:${n}`] as const)]),
            );
          } else {
            expect(decoded).toBeInstanceOf(EventValidationError);
            expect((decoded as EventValidationError).issues.map((i) => i.field)).toEqual(
              expect.arrayContaining(refused),
            );
          }
        },
      ),
    );
  });

  it('an envelope round-trips data with any key names and JSON values: decode(encode(event)) is the event', () => {
    const json = fc.jsonValue({ maxDepth: 2 }).map((v) => JSON.parse(JSON.stringify(v)) as unknown);
    fc.assert(
      fc.property(
        userId(),
        personalFieldName().filter((c) => c !== 'like' && c !== 'unlike'),
        fc.uniqueArray(fc.tuple(anyName(), json), { selector: ([k]) => k, maxLength: 5 }),
        (user, type, pairs) => {
          const extra = pairs.filter(([k]) => !['userId', 'user_id', 'object', 'page'].includes(k));
          // Object.fromEntries defines own keys: `__proto__` included.
          const data = Object.fromEntries([['userId', user], ...extra]) as Record<string, unknown>;
          const { fields } = codec.encode(streams.activity, { type, data, metadata: { id: 'e' } });
          const event = codec.decode(streams.activity, '1-0', fields);
          expect(event.type).toBe(type);
          expect(JSON.stringify(ownEntries(event.data))).toBe(JSON.stringify(ownEntries(data)));
        },
      ),
    );
  });

  it('any fields whatsoever, on any stream, in either form: decoded, or refused with an EventStoreError and a reason, never thrown otherwise', () => {
    const item = fc.oneof(
      anyName(),
      fc.constantFrom(
        'user_id',
        'command',
        'action',
        'specversion',
        'type',
        'data',
        'register',
        'like',
        'add',
        '1',
        '{"userId":"1"}',
        '1.0',
      ),
    );
    fc.assert(
      fc.property(
        fc.constantFrom(streams.updates, streams.activity, streams.friends),
        fc.array(item, { maxLength: 12 }),
        (stream, fields) => {
          const decoded = codec.tryDecode(stream, '1-0', fields);
          if (decoded instanceof EventStoreError) {
            expect(decoded.code).toMatch(/^RS_[A-Z_]+$/);
            expect(decoded.message.length).toBeGreaterThan(0);
          } else {
            expect(decoded.stream).toBe(stream);
            expect(typeof decoded.type).toBe('string');
          }
        },
      ),
      { numRuns: 2_000 },
    );
  });
});
