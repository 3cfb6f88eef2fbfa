/**
 * An entry's partition (partitions/subject.ts): the one function every processor, read-your-writes
 * and `replay --users` use to tell which partition an entry belongs to (nothing in Redis computes it
 * any more). fast-check generates raw entries (flat ones naming the user among other fields,
 * CloudEvents envelopes naming it in `data` as a string or a JSON number, or by the `subject`
 * attribute, or not at all) and checks that partitionOfEntry is stable, that the processor's
 * PartitionFinder (its own lookup of the flat form, and a cache of subjects) agrees with it, and,
 * where the generator knows the subject it meant, that it is sha1(subject) % partitions computed
 * here independently. Known sha1 values pin the function itself: a cursor means the same entries
 * to every processor of every version.
 *
 * How these were checked to fail (each change alone, reverted afterwards): partitionOfSubject
 * hashing `subject.trim()` fails the property and the UTF-8 test; subjectOfEntry ignoring
 * non-negative JSON numbers fails the property (shrunk to `{"user_id":1e2}`); PartitionFinder's
 * flat lookup taking the first occurrence of a name fails the repeated-name test.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { EventCodec, UndecodableEntryError } from '@redsource/event-store';
import { profileCatalog } from '../../../apps/profile-api/src/domain/events.ts';
import { PartitionFinder, partitionOfEntry, partitionOfSubject, subjectOfEntry } from '../src/partitions/subject.ts';
import { anyName, PROTOTYPE_NAMES } from '../../../test/support/arbitraries.ts';
import { designPartition } from '../../../test/support/partitions.ts';

/** The profile app's subject fields, in its order of preference. */
const SUBJECT_FIELDS = ['user_id', 'userId'] as const;

interface Generated {
  readonly fields: string[];
  /** The subject the generator meant the entry to have, where it knows it for sure (else undefined: only the mirror is compared). */
  readonly meant?: string | null;
}

/** Text a subject may be: prototype names, non-ASCII, digits, empty, long, lone surrogates (flat entries: ioredis sends them as U+FFFD, as Node's hash reads them). */
const subjectText = fc.oneof(
  anyName(),
  fc.constantFrom(
    ...PROTOTYPE_NAMES,
    'ünïcødé',
    '日本語',
    '😀',
    'é',
    '0',
    '007',
    '-1',
    '1e3',
    ' 5',
    '5 ',
    '9007199254740993',
  ),
  fc.stringMatching(/^\d{1,20}$/),
);

/** Strings with no lone surrogate (JSON text a client writes as UTF-8 cannot hold one). */
const wellFormed = (s: string) => !/[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/.test(s);
const jsonText = fc.oneof(anyName(), fc.string({ unit: 'grapheme', maxLength: 6 })).filter(wellFormed);

/** A flat entry: other fields, and maybe user_id and/or userId somewhere among them. */
const flatEntry: fc.Arbitrary<Generated> = fc
  .record({
    others: fc.array(
      fc.tuple(
        anyName().filter((n) => !SUBJECT_FIELDS.includes(n as (typeof SUBJECT_FIELDS)[number]) && n !== 'specversion'),
        anyName(),
      ),
      { maxLength: 4 },
    ),
    userUnderscore: fc.option(subjectText),
    userCamel: fc.option(subjectText),
    at: fc.nat(),
    camelFirst: fc.boolean(),
  })
  .map(({ others, userUnderscore, userCamel, at, camelFirst }) => {
    const pairs: [string, string][] = [...others];
    const subjectPairs: [string, string][] = [];
    if (userUnderscore !== null) subjectPairs.push(['user_id', userUnderscore]);
    if (userCamel !== null) subjectPairs.push(['userId', userCamel]);
    if (camelFirst) subjectPairs.reverse();
    pairs.splice(at % (pairs.length + 1), 0, ...subjectPairs);
    // XADD needs one field at least.
    if (pairs.length === 0) pairs.push(['command', 'like']);
    // user_id wins over userId whatever their order (the order of preference, not of the entry).
    const meant = userUnderscore ?? userCamel;
    return { fields: pairs.flat(), meant };
  });

/**
 * A JSON number as a client may write it: integers in plain and other spellings (1.0, 1e2, 10E-1),
 * negatives, fractions, beyond 2^53. Not -0 (JSON.stringify never writes it; see the bug tests).
 */
const jsonNumber: fc.Arbitrary<{ text: string; meant: string | undefined }> = fc
  .oneof(
    fc.integer({ min: 0, max: 2 ** 31 }).map((n) => String(n)),
    fc.maxSafeNat().map((n) => String(n)),
    fc.integer({ min: 0, max: 1000 }).map((n) => `${n}.0`),
    fc.integer({ min: 1, max: 99 }).map((n) => `${n}e2`),
    fc.integer({ min: 1, max: 99 }).map((n) => `${n * 10}E-1`),
    fc.integer({ min: 1, max: 1000 }).map((n) => `-${n}`),
    fc
      .double({ noNaN: true, noDefaultInfinity: true })
      .filter((d) => !Object.is(d, -0))
      .map((d) => JSON.stringify(d)),
    fc.constantFrom('9007199254740991', '9007199254740992', '9007199254740993', '1e21', '0.5', '1e400'),
  )
  .filter((text) => !Object.is(JSON.parse(text), -0))
  .map((text) => {
    const value = JSON.parse(text) as number;
    const integer = Number.isInteger(value) && value >= 0 && value < 2 ** 53;
    return { text, meant: integer ? value.toFixed(0) : undefined };
  });

const jsonScalar = fc.oneof(
  jsonText.map((s) => JSON.stringify(s)),
  jsonNumber.map((n) => n.text),
  fc.constantFrom('true', 'false', 'null', '[]', '{}', '[1,"a"]', '{"userId":"nested"}'),
);

/** An envelope: data (an object with maybe userId / user_id as a string or a number, or something else), maybe a `subject` attribute. */
const envelopeEntry: fc.Arbitrary<Generated> = fc
  .record({
    others: fc.array(
      fc.tuple(
        jsonText.filter((k) => !SUBJECT_FIELDS.includes(k as (typeof SUBJECT_FIELDS)[number])),
        jsonScalar,
      ),
      { maxLength: 3 },
    ),
    userUnderscore: fc.option(
      fc.oneof(
        subjectText.filter(wellFormed).map((s) => ({ text: JSON.stringify(s), meant: s })),
        jsonNumber,
      ),
    ),
    userCamel: fc.option(
      fc.oneof(
        subjectText.filter(wellFormed).map((s) => ({ text: JSON.stringify(s), meant: s })),
        jsonNumber,
      ),
    ),
    at: fc.nat(),
    attribute: fc.option(subjectText),
    data: fc.oneof(
      { weight: 6, arbitrary: fc.constant('object' as const) },
      {
        weight: 1,
        arbitrary: fc.constantFrom('none', '[1,2]', '"a string"', '42', 'null', '{"userId": broken', '', '{}'),
      },
    ),
    extraAttributes: fc.array(fc.tuple(fc.constantFrom('id', 'source', 'time', 'custom'), jsonText), { maxLength: 2 }),
  })
  .map(({ others, userUnderscore, userCamel, at, attribute, data, extraAttributes }) => {
    const fields = ['specversion', '1.0', 'type', 'like'];
    let meant: string | null | undefined = attribute;
    if (data === 'object') {
      const members = others.map(([k, v]) => `${JSON.stringify(k)}:${v}`);
      const subjects: string[] = [];
      if (userUnderscore) subjects.push(`"user_id":${userUnderscore.text}`);
      if (userCamel) subjects.push(`"userId":${userCamel.text}`);
      members.splice(at % (members.length + 1), 0, ...subjects);
      fields.push('data', `{${members.join(',')}}`);
      // The first subject field (in order of preference) holding a string or a plain integer names it; else the attribute.
      const found = [userUnderscore, userCamel].find((u) => u && u.meant !== undefined);
      // Someone else's key may repeat user_id/userId (`others` excludes them) — so `found` is certain.
      meant = found ? found.meant : attribute;
    } else if (data !== 'none') {
      fields.push('data', data);
    }
    for (const [name, value] of extraAttributes) fields.push(name, value);
    if (attribute !== null) fields.push('subject', attribute);
    return { fields, meant };
  });

const entries = fc.array(fc.oneof(flatEntry, envelopeEntry), { minLength: 1, maxLength: 25 });

/** The processor's finder for one stream whose subject fields are the profile app's. */
const finder = (partitions: number) => new PartitionFinder(partitions, () => SUBJECT_FIELDS);

describe('partitionOfEntry on random entries', () => {
  it("is stable, agrees with the processor's PartitionFinder, and is sha1(subject) % partitions (0 without a subject)", () => {
    fc.assert(
      fc.property(entries, fc.integer({ min: 1, max: 40 }), (generated, partitions) => {
        const find = finder(partitions);
        for (const g of generated) {
          const context = JSON.stringify({ fields: g.fields, partitions });
          const partition = partitionOfEntry(g.fields, SUBJECT_FIELDS, partitions);
          expect(partition, context).toBeGreaterThanOrEqual(0);
          expect(partition, context).toBeLessThan(partitions);
          expect(partitionOfEntry([...g.fields], SUBJECT_FIELDS, partitions), context).toBe(partition);
          // Twice: the second answer comes from the finder's cache of subjects.
          expect(find.entry('s', g.fields), context).toBe(partition);
          expect(find.entry('s', g.fields), context).toBe(partition);
          if (g.meant !== undefined) {
            // Independently of subject.ts: sha1 of the subject meant, or partition 0 for none.
            expect(partition, context).toBe(g.meant === null ? 0 : designPartition(g.meant, partitions));
            expect(subjectOfEntry(g.fields, SUBJECT_FIELDS) ?? null, context).toBe(g.meant);
          }
        }
      }),
      { numRuns: 1_000 },
    );
  });

  it('is the documented function: known sha1 values of known subjects', () => {
    // sha1("1") = 356a192b..., sha1("42") = 92cfceb3..., sha1("") = da39a3ee...: first 32 bits, modulo the count.
    const known: [string, number, [number, number, number]][] = [
      ['1', 0x356a192b, [11, 299, 2]],
      ['42', 0x92cfceb3, [3, 691, 2]],
      ['user-7', 0x7efcf445, [1, 69, 2]],
      ['__proto__', 0xf6a20f54, [0, 852, 0]],
      ['ünïcødé', 0xe3165be0, [0, 992, 5]],
      ['😀', 0x9c533688, [0, 648, 2]],
      ['', 0xda39a3ee, [10, 1006, 4]],
    ];
    for (const [subject, first32, [of12, of1024, of7]] of known) {
      expect(
        [partitionOfSubject(subject, 12), partitionOfSubject(subject, 1024), partitionOfSubject(subject, 7)],
        subject,
      ).toEqual([of12, of1024, of7]);
      expect(first32 % 12).toBe(of12);
      expect(partitionOfEntry(['user_id', subject, 'command', 'like'], SUBJECT_FIELDS, 12), subject).toBe(of12);
      expect(
        partitionOfEntry(
          ['specversion', '1.0', 'type', 'like', 'data', JSON.stringify({ userId: subject })],
          SUBJECT_FIELDS,
          12,
        ),
        subject,
      ).toBe(of12);
      expect(finder(1024).entry('s', ['userId', subject]), subject).toBe(of1024);
    }
    expect(partitionOfEntry(['specversion', '1.0', 'type', 'like', 'data', '{"userId":42}'], SUBJECT_FIELDS, 12)).toBe(
      3,
    );
  });

  it('a subject is hashed as its UTF-8 bytes: prototype names, non-ASCII, astral, empty, digits', () => {
    const subjects = [
      ...PROTOTYPE_NAMES,
      'ünïcødé',
      '日本語',
      '😀',
      'Ω≈ç√∫',
      '',
      ' ',
      '0',
      '00',
      '007',
      '123456789012345678901234567890',
      'a'.repeat(5_000),
    ];
    for (const partitions of [1, 7, 12, 64, 1024]) {
      for (const s of subjects) {
        const want = designPartition(Buffer.from(s, 'utf8'), partitions);
        expect(
          partitionOfEntry(['user_id', s, 'command', 'like'], SUBJECT_FIELDS, partitions),
          `'${s.slice(0, 20)}' of ${partitions}`,
        ).toBe(want);
        expect(finder(partitions).entry('s', ['user_id', s, 'command', 'like'])).toBe(want);
      }
    }
  });

  it('a name given twice in a flat entry: the last occurrence counts, in the finder too', () => {
    const fields = ['user_id', 'first', 'command', 'like', 'user_id', 'second'];
    expect(subjectOfEntry(fields, SUBJECT_FIELDS)).toBe('second');
    expect(partitionOfEntry(fields, SUBJECT_FIELDS, 1024)).toBe(designPartition('second', 1024));
    expect(designPartition('first', 1024)).not.toBe(designPartition('second', 1024));
    expect(finder(1024).entry('s', fields)).toBe(designPartition('second', 1024));
  });

  it("the finder uses each stream's own subject fields", () => {
    const find = new PartitionFinder(1024, (stream) => (stream === 'orders' ? ['customer'] : SUBJECT_FIELDS));
    expect(find.entry('orders', ['customer', 'c9', 'user_id', 'u1'])).toBe(designPartition('c9', 1024));
    expect(find.entry('users', ['customer', 'c9', 'user_id', 'u1'])).toBe(designPartition('u1', 1024));
    expect(find.entry('users', ['customer', 'c9'])).toBe(0);
  });
});

/**
 * A user's entries must share a partition however a client writes the id, or they are applied out
 * of order (by two processors at once). Each case below is an event the profile app decodes as
 * VALID for the user named.
 */
describe("a user's valid envelope events share the partition of the user's flat events", () => {
  const PARTITIONS = 12;
  const flat = (user: string) => ['user_id', user, 'command', 'like', 'page', 'p1'];
  const envelope = (data: string) => ['specversion', '1.0', 'type', 'like', 'data', data];
  const partitionsOf = (cases: string[][]) => cases.map((c) => partitionOfEntry(c, SUBJECT_FIELDS, PARTITIONS));

  it('user 0 written as "0", 0, 0.0, 0e0 and -0', () => {
    const cases = [
      flat('0'),
      envelope('{"userId":"0","object":"p"}'),
      envelope('{"userId":0,"object":"p"}'),
      envelope('{"userId":0.0,"object":"p"}'),
      envelope('{"userId":0e0,"object":"p"}'),
      envelope('{"userId":-0,"object":"p"}'),
    ];
    expect(partitionsOf(cases)).toEqual(cases.map(() => designPartition('0', PARTITIONS)));
    const find = finder(PARTITIONS);
    expect(cases.map((c) => find.entry('s', c))).toEqual(partitionsOf(cases));
  });

  it('user 5 whose data also holds a lone surrogate escape (valid JSON)', () => {
    const cases = [flat('5'), envelope('{"userId":"5","object":"p","note":"\\ud800"}')];
    expect(designPartition('5', PARTITIONS)).not.toBe(0);
    expect(partitionsOf(cases)).toEqual([designPartition('5', PARTITIONS), designPartition('5', PARTITIONS)]);
  });

  // Data nested deeper than the event store decodes names no subject: the event store refuses such
  // an envelope, so it is dead-lettered in whatever partition it falls, and orders nothing.
  it('an envelope whose data nests over 1000 deep falls back to the subject attribute, and is refused by the codec', () => {
    const deep = `${'['.repeat(1001)}${']'.repeat(1001)}`;
    const entry = envelope(`{"userId":"5","object":"p","junk":${deep}}`);
    expect(partitionOfEntry(entry, SUBJECT_FIELDS, PARTITIONS)).toBe(0);
    expect(partitionOfEntry([...entry, 'subject', 'attr'], SUBJECT_FIELDS, PARTITIONS)).toBe(
      designPartition('attr', PARTITIONS),
    );
    expect(new EventCodec(profileCatalog()).tryDecode('user_activity', '1-0', entry)).toBeInstanceOf(
      UndecodableEntryError,
    );
  });

  it('data only a lax JSON reader accepts (0x10, 01, +1) is refused by the codec', () => {
    const codec = new EventCodec(profileCatalog());
    for (const data of ['{"userId":0x10,"object":"p"}', '{"userId":01,"object":"p"}', '{"userId":+1,"object":"p"}']) {
      expect(codec.tryDecode('user_activity', '1-0', [...envelope(data), 'subject', 'attr']), data).toBeInstanceOf(
        UndecodableEntryError,
      );
    }
  });
});
