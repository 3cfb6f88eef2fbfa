/**
 * The TypeScript mirror of routing (partitions/subject.ts: partitionOfEntry, used by read-your-writes
 * and `replay --users`) against route.lua itself on a real Redis: fast-check generates raw entries
 * (flat ones naming the user among other fields, CloudEvents envelopes naming it in `data` as a string
 * or a JSON number, or by the `subject` attribute, or not at all), XADDs them, routes them with the
 * script, and checks that each entry landed once, under its own id and with its own fields, in the
 * partition the mirror computes, and, where the generator knows the subject it meant, in
 * sha1(subject) % partitions computed here independently.
 *
 * How these were checked to fail (each change alone, reverted afterwards): partitionOfSubject
 * hashing `subject.trim()` fails the property and the UTF-8 test; subjectOfEntry ignoring
 * non-negative JSON numbers fails the property (shrunk to `{"user_id":1e2}`); route.lua hashing
 * `string.lower(subject)` fails both.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { EventCodec, UndecodableEntryError } from '@redsource/event-store';
import { profileCatalog } from '../../../apps/profile-api/src/domain/events.ts';
import { PartitionRouter } from '../src/partitions/router.ts';
import { partitionOfEntry, subjectOfEntry } from '../src/partitions/subject.ts';
import { anyName, PROTOTYPE_NAMES } from '../../../test/support/arbitraries.ts';
import { designPartition, dropStreamKeys, expectKeyLayout, partitionContents, unrouted } from '../../../test/support/partitions.ts';
import { unique, useTestRedis } from '../../../test/support/redis.ts';

const ctx = useTestRedis();

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
  fc.constantFrom(...PROTOTYPE_NAMES, 'ünïcødé', '日本語', '😀', 'é', '0', '007', '-1', '1e3', ' 5', '5 ', '9007199254740993'),
  fc.stringMatching(/^\d{1,20}$/),
);

/** Strings JSON.stringify writes without a lone surrogate escape (cjson refuses those: see the bug tests below). */
const wellFormed = (s: string) => !/[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/.test(s);
const jsonText = fc.oneof(anyName(), fc.string({ unit: 'grapheme', maxLength: 6 })).filter(wellFormed);

/** A flat entry: other fields, and maybe user_id and/or userId somewhere among them. */
const flatEntry: fc.Arbitrary<Generated> = fc
  .record({
    others: fc.array(fc.tuple(anyName().filter((n) => !SUBJECT_FIELDS.includes(n as (typeof SUBJECT_FIELDS)[number]) && n !== 'specversion'), anyName()), { maxLength: 4 }),
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
    fc.double({ noNaN: true, noDefaultInfinity: true }).filter((d) => !Object.is(d, -0)).map((d) => JSON.stringify(d)),
    fc.constantFrom('9007199254740991', '9007199254740992', '9007199254740993', '1e21', '0.5', '1e400'),
  )
  .filter((text) => !Object.is(JSON.parse(text), -0))
  .map((text) => {
    const value = JSON.parse(text) as number;
    const integer = Number.isInteger(value) && value >= 0 && value < 2 ** 53;
    return { text, meant: integer ? value.toFixed(0) : undefined };
  });

const jsonScalar = fc.oneof(jsonText.map((s) => JSON.stringify(s)), jsonNumber.map((n) => n.text), fc.constantFrom('true', 'false', 'null', '[]', '{}', '[1,"a"]', '{"userId":"nested"}'));

/** An envelope: data (an object with maybe userId / user_id as a string or a number, or something else), maybe a `subject` attribute. */
const envelopeEntry: fc.Arbitrary<Generated> = fc
  .record({
    others: fc.array(fc.tuple(jsonText.filter((k) => !SUBJECT_FIELDS.includes(k as (typeof SUBJECT_FIELDS)[number])), jsonScalar), { maxLength: 3 }),
    userUnderscore: fc.option(fc.oneof(subjectText.filter(wellFormed).map((s) => ({ text: JSON.stringify(s), meant: s as string | undefined })), jsonNumber)),
    userCamel: fc.option(fc.oneof(subjectText.filter(wellFormed).map((s) => ({ text: JSON.stringify(s), meant: s as string | undefined })), jsonNumber)),
    at: fc.nat(),
    attribute: fc.option(subjectText),
    data: fc.oneof(
      { weight: 6, arbitrary: fc.constant('object' as const) },
      { weight: 1, arbitrary: fc.constantFrom('none', '[1,2]', '"a string"', '42', 'null', '{"userId": broken', '', '{}') },
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
      meant = found ? (found.meant as string) : attribute;
    } else if (data !== 'none') {
      fields.push('data', data);
    }
    for (const [name, value] of extraAttributes) fields.push(name, value);
    if (attribute !== null) fields.push('subject', attribute);
    return { fields, meant };
  });

const entries = fc.array(fc.oneof(flatEntry, envelopeEntry), { minLength: 1, maxLength: 25 });

/** XADDs the entries to a new stream, routes them all with route.lua into `partitions`, and returns where each landed. */
async function routeOnce(generated: readonly Generated[], partitions: number) {
  const stream = unique('subjects');
  const group = unique('g');
  await ctx.redis.xgroup('CREATE', stream, group, '0', 'MKSTREAM');
  const pipeline = ctx.redis.pipeline();
  for (const g of generated) pipeline.xadd(stream, '*', ...g.fields);
  const ids = ((await pipeline.exec()) ?? []).map(([error, id]) => {
    if (error) throw error;
    return String(id);
  });
  const router = new PartitionRouter(ctx.redis, group, partitions, () => SUBJECT_FIELDS);
  let routed = 0;
  for (let r = await router.route(stream); r.routed > 0; r = await router.route(stream)) routed += r.routed;
  const source = new Map((await ctx.redis.xrange(stream, '-', '+')).map(([id, fields]) => [id, fields] as const));
  const landed = await partitionContents(ctx.redis, stream, group, partitions);
  const left = await unrouted(ctx.redis, stream, group);
  await dropStreamKeys(ctx.redis, stream);
  return { ids, routed, source, landed, left };
}

describe('partitionOfEntry (TypeScript) agrees with route.lua (Redis) on random entries', () => {
  it('the processor and this file name the same partition keys', () => {
    expectKeyLayout();
  });

  it('every entry is routed once, under its own id and fields, to the partition the mirror computes', async () => {
    await fc.assert(
      fc.asyncProperty(entries, fc.integer({ min: 1, max: 40 }), async (generated, partitions) => {
        const { ids, routed, source, landed, left } = await routeOnce(generated, partitions);
        expect(routed).toBe(ids.length);
        expect(left).toBe(0);
        expect(landed.map((e) => e.id).sort()).toEqual([...ids].sort());
        for (const [i, g] of generated.entries()) {
          const id = ids[i] as string;
          const copy = landed.find((e) => e.id === id);
          const context = JSON.stringify({ fields: g.fields, partitions });
          expect(copy?.fields, context).toEqual(source.get(id));
          expect(copy?.partition, context).toBe(partitionOfEntry(g.fields, SUBJECT_FIELDS, partitions));
          if (g.meant !== undefined) {
            // Independently of subject.ts: sha1 of the subject meant, or partition 0 for none.
            expect(copy?.partition, context).toBe(g.meant === null ? 0 : designPartition(g.meant, partitions));
            expect(subjectOfEntry(g.fields, SUBJECT_FIELDS) ?? null, context).toBe(g.meant);
          }
        }
      }),
      { numRuns: 400 },
    );
  }, 60_000);

  it('a subject is hashed as its UTF-8 bytes on both sides: prototype names, non-ASCII, astral, empty, digits', async () => {
    const subjects = [...PROTOTYPE_NAMES, 'ünïcødé', '日本語', '😀', 'Ω≈ç√∫', '', ' ', '0', '00', '007', '123456789012345678901234567890', 'a'.repeat(5_000)];
    const generated = subjects.map((s) => ({ fields: ['user_id', s, 'command', 'like'], meant: s }));
    for (const partitions of [1, 7, 12, 64, 1024]) {
      const { landed, ids } = await routeOnce(generated, partitions);
      for (const [i, s] of subjects.entries()) {
        const copy = landed.find((e) => e.id === ids[i]);
        expect(copy?.partition, `'${s.slice(0, 20)}' of ${partitions}`).toBe(designPartition(Buffer.from(s, 'utf8'), partitions));
        expect(copy?.partition).toBe(partitionOfEntry(generated[i]?.fields ?? [], SUBJECT_FIELDS, partitions));
      }
    }
  });
});

/**
 * A user's entries must share a partition however a client writes the id, or they are applied out
 * of order (by two processors at once). Each case below is an event the profile app decodes as
 * VALID for the user named, so a mismatch would not only be a TS/Lua disagreement: the entry would be
 * routed away from the user's other entries.
 */
describe('a user\'s valid envelope events share the partition of the user\'s flat events', () => {
  const PARTITIONS = 12;
  const flat = (user: string) => ['user_id', user, 'command', 'like', 'page', 'p1'];
  const envelope = (data: string) => ['specversion', '1.0', 'type', 'like', 'data', data];

  async function partitionsOf(cases: string[][]): Promise<number[]> {
    const { ids, landed } = await routeOnce(cases.map((fields) => ({ fields })), PARTITIONS);
    return ids.map((id) => landed.find((e) => e.id === id)?.partition ?? -1);
  }

  it('user 0 written as "0", 0, 0.0, 0e0 and -0 (cjson gives -0, which route.lua writes as "0")', async () => {
    const cases = [flat('0'), envelope('{"userId":"0","object":"p"}'), envelope('{"userId":0,"object":"p"}'), envelope('{"userId":0.0,"object":"p"}'), envelope('{"userId":0e0,"object":"p"}'), envelope('{"userId":-0,"object":"p"}')];
    const routed = await partitionsOf(cases);
    const mirror = cases.map((c) => partitionOfEntry(c, SUBJECT_FIELDS, PARTITIONS));
    expect(mirror).toEqual(cases.map(() => designPartition('0', PARTITIONS)));
    expect(routed).toEqual(mirror);
  });

  it('user 5 whose data also holds a lone surrogate escape (valid JSON; cjson refuses it, route.lua reads it again without)', async () => {
    const cases = [flat('5'), envelope('{"userId":"5","object":"p","note":"\\ud800"}')];
    const routed = await partitionsOf(cases);
    expect(partitionOfEntry(cases[1] as string[], SUBJECT_FIELDS, PARTITIONS)).toBe(designPartition('5', PARTITIONS));
    expect(designPartition('5', PARTITIONS)).not.toBe(0);
    expect(routed).toEqual([designPartition('5', PARTITIONS), designPartition('5', PARTITIONS)]);
  });

  // Data nested deeper than cjson reads, or that only cjson takes for JSON, cannot name its subject
  // to route.lua as JSON.parse would read it: the event store refuses such an envelope, so it is
  // dead-lettered wherever it is routed and orders nothing; mirror and router still agree.
  it('an envelope whose data nests over 1000 deep is refused by the codec, and routed alike by both', async () => {
    const deep = `${'['.repeat(1001)}${']'.repeat(1001)}`;
    const cases = [envelope(`{"userId":"5","object":"p","junk":${deep}}`)];
    expect(await partitionsOf(cases)).toEqual(cases.map((c) => partitionOfEntry(c, SUBJECT_FIELDS, PARTITIONS)));
    expect(new EventCodec(profileCatalog()).tryDecode('user_activity', '1-0', cases[0] as string[])).toBeInstanceOf(UndecodableEntryError);
  });

  it('data only cjson accepts (0x10, 01, +1) is refused by the codec', () => {
    const codec = new EventCodec(profileCatalog());
    for (const data of ['{"userId":0x10,"object":"p"}', '{"userId":01,"object":"p"}', '{"userId":+1,"object":"p"}']) {
      expect(codec.tryDecode('user_activity', '1-0', [...envelope(data), 'subject', 'attr']), data).toBeInstanceOf(UndecodableEntryError);
    }
  });
});
