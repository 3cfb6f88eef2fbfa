import fc from 'fast-check';

/** Names that are members of Object.prototype (or special to it): the classic way input names break objects. */
export const PROTOTYPE_NAMES = [
  '__proto__',
  'constructor',
  'toString',
  'valueOf',
  'hasOwnProperty',
  'isPrototypeOf',
  'propertyIsEnumerable',
  'toLocaleString',
  '__defineGetter__',
  '__defineSetter__',
  '__lookupGetter__',
  '__lookupSetter__',
  'prototype',
] as const;

/**
 * Any name an input may hold: prototype members, plain ASCII, unicode (astral planes included),
 * any UTF-16 (lone surrogates included), empty, very long.
 */
export const anyName = (): fc.Arbitrary<string> =>
  fc.oneof(
    { weight: 3, arbitrary: fc.constantFrom(...PROTOTYPE_NAMES) },
    { weight: 3, arbitrary: fc.string({ maxLength: 12 }) },
    { weight: 2, arbitrary: fc.string({ unit: 'grapheme', maxLength: 8 }) },
    { weight: 1, arbitrary: fc.string({ unit: 'binary', maxLength: 8 }) },
    { weight: 1, arbitrary: fc.constant('') },
    { weight: 1, arbitrary: fc.string({ minLength: 300, maxLength: 2_000 }) },
  );

/** A name the profile accepts as a personal field (`[A-Za-z_][A-Za-z0-9_]{0,63}`), prototype members among them. */
export const personalFieldName = (): fc.Arbitrary<string> =>
  fc.oneof(
    fc.constantFrom(...PROTOTYPE_NAMES.filter((n) => n !== 'prototype'), 'prototype'),
    fc.stringMatching(/^[A-Za-z_][A-Za-z0-9_]{0,63}$/),
  );

/** A snapshot id as the profile accepts it. */
export const userId = (): fc.Arbitrary<string> =>
  fc.oneof(fc.constantFrom('1', '2', '3', '_', '-'), fc.stringMatching(/^[A-Za-z0-9_-]{1,64}$/));

/** Names the profile's flat form gives a meaning (type fields, aliases, the envelope marker). */
export const FLAT_RESERVED = new Set([
  'user_id',
  'userId',
  'command',
  'action',
  'page',
  'object',
  'specversion',
  'surename',
  'surname',
  'friend_id',
  'friendId',
  'name',
]);

/** `count` distinct names of `names`, none in `excluded`. */
export const distinctNames = (names: fc.Arbitrary<string>, excluded: ReadonlySet<string>, maxLength = 5) =>
  fc.uniqueArray(
    names.filter((n) => !excluded.has(n)),
    { maxLength },
  );

/** Arbitrary bytes, as Redis holds them (not necessarily UTF-8). */
export const anyBytes = (maxLength = 16) => fc.uint8Array({ maxLength }).map((bytes) => Buffer.from(bytes));
