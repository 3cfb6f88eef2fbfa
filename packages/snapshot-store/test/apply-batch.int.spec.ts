import { describe, expect, it, vi } from 'vitest';
import { z } from 'zod';
import {
  checkMutations,
  CorruptSnapshotError,
  InvalidMutationError,
  InvalidSnapshotIdError,
  InvalidSnapshotStoreOptionsError,
  SnapshotStore,
  type BatchEntry,
  type Mutation,
  type SnapshotChange,
} from '@redsource/snapshot-store';
import { pendingCount, unique, useTestRedis } from '../../../test/support/redis.ts';
import { rejection } from '../../../test/support/rejection.ts';
import { partitionApplyContract } from './partition-apply.contract.ts';

const ctx = useTestRedis();

/** A stream, a dead-letter stream and a snapshot store on names no other test uses. */
function isolated() {
  const stream = unique('stream');
  const deadLetterStream = unique('dead');
  const store = new SnapshotStore({ redis: ctx.redis, keyPrefix: `${unique('snap')}_` });
  /** XADDs `n` real entries (the script looks for gaps in the stream) and returns their ids. */
  const xadd = async (n: number): Promise<string[]> => {
    const ids: string[] = [];
    for (let i = 0; i < n; i++) ids.push(String(await ctx.redis.xadd(stream, '*', 'n', String(i))));
    return ids;
  };
  const apply = (entries: readonly BatchEntry[], ackGroup?: string) =>
    store.applyBatch({ stream, deadLetterStream, entries, ...(ackGroup === undefined ? {} : { ackGroup }) });
  return { stream, deadLetterStream, store, xadd, apply };
}

const change = (snapshotId: string, ...mutations: Mutation[]): SnapshotChange => ({ snapshotId, mutations });
const entry = (entryId: string | undefined, ...changes: SnapshotChange[]): BatchEntry => ({
  entryId: entryId ?? 'missing',
  changes,
});
const deadLetter = (entryId: string | undefined, reason: string, fields: string[]): BatchEntry => ({
  entryId: entryId ?? 'missing',
  deadLetter: { reason, fields },
});

describe('applying a batch changes the snapshots', () => {
  it('sets fields, sets and counters readable through read() and readMany()', async () => {
    const { store, xadd, apply } = isolated();
    const [e1, e2, e3] = await xadd(3);
    const result = await apply([
      entry(
        e1,
        change(
          '1',
          { op: 'replaceFields', fields: { name: 'Duffy', address: { city: 'Burbank', zip: [9, 1] } } },
          { op: 'create' },
        ),
      ),
      entry(
        e2,
        change(
          '1',
          { op: 'addMember', set: 'friends', member: '2' },
          { op: 'increment', counter: 'like' },
          { op: 'setFields', fields: { age: 30 } },
        ),
      ),
      entry(
        e3,
        change('2', { op: 'create' }, { op: 'increment', counter: 'kick', by: 5 }),
        change('1', { op: 'increment', counter: 'like', by: 2 }),
      ),
    ]);
    expect(result).toEqual({
      applied: 3,
      skipped: 0,
      deadLettered: 0,
      blockedAt: undefined,
      handled: 3,
      cursor: e3,
      held: false,
    });

    expect(await store.read('1')).toEqual({
      id: '1',
      exists: true,
      revision: 3,
      fields: { name: 'Duffy', address: { city: 'Burbank', zip: [9, 1] }, age: 30 },
      sets: { friends: ['2'] },
      counters: { like: 3 },
    });
    const [one, two, none] = await store.readMany(['1', '2', 'nobody']);
    expect(one?.fields).toEqual({ name: 'Duffy', address: { city: 'Burbank', zip: [9, 1] }, age: 30 });
    expect(two).toEqual({ id: '2', exists: true, revision: 1, fields: {}, sets: {}, counters: { kick: 5 } });
    expect(none).toBeUndefined();
    expect(await store.readMany([])).toEqual([]);
  });

  it('applies entries in stream order whatever order they are given in', async () => {
    const { store, xadd, apply } = isolated();
    const [e1, e2] = await xadd(2);
    const result = await apply([
      entry(e2, change('1', { op: 'setFields', fields: { name: 'second' } })),
      entry(e1, change('1', { op: 'setFields', fields: { name: 'first' } }, { op: 'create' })),
    ]);
    expect(result.applied).toBe(2);
    expect(result.cursor).toBe(e2);
    expect((await store.read('1'))?.fields).toEqual({ name: 'second' });
  });

  it('removes fields with unsetFields', async () => {
    const { store, xadd, apply } = isolated();
    const [e1, e2] = await xadd(2);
    await apply([
      entry(e1, change('1', { op: 'create' }, { op: 'setFields', fields: { a: 1, b: 2, c: 3 } })),
      entry(e2, change('1', { op: 'unsetFields', names: ['a', 'c'] })),
    ]);
    expect((await store.read('1'))?.fields).toEqual({ b: 2 });
  });

  it('returns the current cursor and applies nothing for an empty batch', async () => {
    const { store, xadd, apply, stream } = isolated();
    const [e1] = await xadd(1);
    await apply([entry(e1, change('1', { op: 'create' }))]);
    expect(await apply([])).toEqual({
      applied: 0,
      skipped: 0,
      deadLettered: 0,
      blockedAt: undefined,
      handled: 0,
      cursor: e1,
      held: false,
    });
    expect(await store.cursor(stream)).toBe(e1);
  });
});

describe('each entry is applied at most once', () => {
  it('skips a batch applied before and leaves the snapshots byte-for-byte unchanged', async () => {
    const { store, xadd, apply, stream } = isolated();
    const [e1, e2, e3] = await xadd(3);
    const batch = [
      entry(e1, change('1', { op: 'create' }, { op: 'replaceFields', fields: { name: 'A' } })),
      entry(
        e2,
        change('1', { op: 'addMember', set: 'likedPages', member: 'p1' }, { op: 'increment', counter: 'like' }),
      ),
      entry(
        e3,
        change('2', { op: 'create' }, { op: 'increment', counter: 'kick' }),
        change('1', { op: 'unsetFields', names: ['name'] }),
      ),
    ];
    await apply(batch);
    const before = [await ctx.redis.hgetall(store.key('1')), await ctx.redis.hgetall(store.key('2'))];

    const again = await apply(batch);
    expect(again.skipped).toBe(batch.length);
    expect(again.applied).toBe(0);
    expect(again.deadLettered).toBe(0);
    expect(again.handled).toBe(batch.length);
    expect(again.blockedAt).toBeUndefined();
    expect(again.cursor).toBe(e3);
    expect([await ctx.redis.hgetall(store.key('1')), await ctx.redis.hgetall(store.key('2'))]).toEqual(before);
    expect(await store.cursor(stream)).toBe(e3);
  });

  it('skips the applied prefix of a redelivered batch and applies the rest', async () => {
    const { store, xadd, apply } = isolated();
    const [e1, e2, e3] = await xadd(3);
    const inc = (id: string | undefined) => entry(id, change('1', { op: 'increment', counter: 'n' }));
    await apply([inc(e1), inc(e2)]);
    const result = await apply([inc(e1), inc(e2), inc(e3)]);
    expect(result).toMatchObject({ applied: 1, skipped: 2, handled: 3, cursor: e3, held: false });
    expect((await store.read('1'))?.counters).toEqual({ n: 3 });
  });
});

describe('an entry waits for its unapplied predecessor', () => {
  it('reports blockedAt, applies nothing, and applies the batch once the predecessor is applied', async () => {
    const { store, xadd, apply, stream } = isolated();
    const [e1, e2, e3] = await xadd(3);
    const later = [
      entry(e2, change('1', { op: 'create' }, { op: 'setFields', fields: { step: 2 } })),
      entry(e3, change('1', { op: 'increment', counter: 'n' })),
    ];

    const blocked = await apply(later);
    expect(blocked).toEqual({
      applied: 0,
      skipped: 0,
      deadLettered: 0,
      blockedAt: e2,
      handled: 0,
      cursor: '0-0',
      held: false,
    });
    expect(await store.read('1')).toBeUndefined();
    expect(await store.cursor(stream)).toBe('0-0');

    expect((await apply([entry(e1, change('0', { op: 'create' }))])).applied).toBe(1);
    const unblocked = await apply(later);
    expect(unblocked).toEqual({
      applied: 2,
      skipped: 0,
      deadLettered: 0,
      blockedAt: undefined,
      handled: 2,
      cursor: e3,
      held: false,
    });
    expect(await store.read('1')).toMatchObject({ exists: true, fields: { step: 2 }, counters: { n: 1 } });
  });

  it('applies the prefix before a gap inside the batch and stops at the gap', async () => {
    const { store, xadd, apply } = isolated();
    const [e1, , e3] = await xadd(3);
    const result = await apply([
      entry(e1, change('1', { op: 'increment', counter: 'n' })),
      entry(e3, change('1', { op: 'increment', counter: 'n', by: 10 })),
    ]);
    expect(result).toMatchObject({ applied: 1, handled: 1, blockedAt: e3, cursor: e1 });
    expect((await store.read('1'))?.counters).toEqual({ n: 1 });
  });
});

describe('dead-lettered entries', () => {
  it('land in the dead-letter stream with where they came from and why, and advance the cursor', async () => {
    const { store, xadd, apply, stream, deadLetterStream } = isolated();
    const [e1, e2, e3] = await xadd(3);
    const before = Date.now();
    const result = await apply([
      entry(e1, change('1', { op: 'create' })),
      deadLetter(e2, 'no type field (one of command, action)', ['user_id', '1', 'name', 'x']),
    ]);
    expect(result).toEqual({
      applied: 1,
      skipped: 0,
      deadLettered: 1,
      blockedAt: undefined,
      handled: 2,
      cursor: e2,
      held: false,
    });
    expect(await store.cursor(stream)).toBe(e2);

    const dead = await ctx.redis.xrange(deadLetterStream, '-', '+');
    expect(dead).toHaveLength(1);
    const record = Object.fromEntries(
      (dead[0]?.[1] ?? []).reduce<[string, string][]>(
        (pairs, value, i, all) => (i % 2 === 0 ? [...pairs, [value, all[i + 1] ?? '']] : pairs),
        [],
      ),
    );
    expect(record).toMatchObject({ stream, entry_id: e2, reason: 'no type field (one of command, action)', group: '' });
    expect(JSON.parse(record['fields'] ?? 'null')).toEqual(['user_id', '1', 'name', 'x']);
    const deadAt = Number(record['dead_at']);
    expect(deadAt).toBeGreaterThanOrEqual(before - 5_000);
    expect(deadAt).toBeLessThanOrEqual(Date.now() + 5_000);

    // The entry after the dead letter is not blocked by it.
    expect((await apply([entry(e3, change('1', { op: 'increment', counter: 'n' }))])).applied).toBe(1);
    // A redelivered dead letter is skipped, not dead-lettered again.
    const again = await apply([deadLetter(e2, 'again', [])]);
    expect(again).toMatchObject({ skipped: 1, deadLettered: 0 });
    expect(await ctx.redis.xlen(deadLetterStream)).toBe(1);
  });

  it('a batch of only dead letters moves the cursor', async () => {
    const { store, xadd, apply, stream } = isolated();
    const [e1, e2] = await xadd(2);
    const result = await apply([deadLetter(e1, 'bad', ['a', 'b']), deadLetter(e2, 'bad', ['c', 'd'])]);
    expect(result.deadLettered).toBe(2);
    expect(await store.cursor(stream)).toBe(e2);
  });
});

describe('acknowledging in the consumer group', () => {
  it('XACKs the handled entries (applied, dead-lettered, skipped) but not a blocked one', async () => {
    const { xadd, apply, stream, deadLetterStream } = isolated();
    const group = unique('group');
    const [e1, e2, e3, e4] = await xadd(4);
    await ctx.redis.xgroup('CREATE', stream, group, '0');
    await ctx.redis.xreadgroup('GROUP', group, 'c1', 'COUNT', 10, 'STREAMS', stream, '>');
    expect(await pendingCount(ctx.redis, stream, group)).toBe(4);

    const first = await apply(
      [
        entry(e1, change('1', { op: 'create' })),
        deadLetter(e2, 'bad', []),
        entry(e4, change('1', { op: 'increment', counter: 'n' })),
      ],
      group,
    );
    expect(first).toMatchObject({ applied: 1, deadLettered: 1, handled: 2, blockedAt: e4 });
    expect(await pendingCount(ctx.redis, stream, group)).toBe(2);
    const pendingIds = ((await ctx.redis.xpending(stream, group, '-', '+', 10)) as [string, ...unknown[]][]).map(
      (p) => p[0],
    );
    expect(pendingIds).toEqual([e3, e4]);

    const dead = await ctx.redis.xrange(deadLetterStream, '-', '+');
    expect(dead[0]?.[1]).toContain(group);

    const second = await apply(
      [
        entry(e1, change('1', { op: 'create' })),
        entry(e3, change('1', { op: 'increment', counter: 'n' })),
        entry(e4, change('1', { op: 'increment', counter: 'n' })),
      ],
      group,
    );
    expect(second).toMatchObject({ applied: 2, skipped: 1, handled: 3 });
    expect(await pendingCount(ctx.redis, stream, group)).toBe(0);
  });

  it('acks nothing without ackGroup', async () => {
    const { xadd, apply, stream } = isolated();
    const group = unique('group');
    const [e1] = await xadd(1);
    await ctx.redis.xgroup('CREATE', stream, group, '0');
    await ctx.redis.xreadgroup('GROUP', group, 'c1', 'STREAMS', stream, '>');
    expect((await apply([entry(e1, change('1', { op: 'create' }))])).applied).toBe(1);
    expect(await pendingCount(ctx.redis, stream, group)).toBe(1);
  });
});

describe("entries of one partition of a stream (a partitioned processor's)", () => {
  partitionApplyContract(() => ctx.redis);
});

describe('ordered sets keep the order members were added in', () => {
  it('lists members in insertion order; a removed and re-added member moves to the end', async () => {
    const { store, xadd, apply } = isolated();
    const [e1, e2, e3, e4, e5, e6] = await xadd(6);
    const add = (id: string | undefined, member: string) =>
      entry(id, change('1', { op: 'addMember', set: 'tags', member }));
    await apply([add(e1, 'c'), add(e2, 'a'), add(e3, 'b')]);
    expect((await store.read('1'))?.sets['tags']).toEqual(['c', 'a', 'b']);

    await apply([entry(e4, change('1', { op: 'removeMember', set: 'tags', member: 'a' })), add(e5, 'a')]);
    expect((await store.read('1'))?.sets['tags']).toEqual(['c', 'b', 'a']);

    // Adding a member already present keeps its place.
    await apply([add(e6, 'c')]);
    expect((await store.read('1'))?.sets['tags']).toEqual(['c', 'b', 'a']);
  });

  it('keeps members with colons and several sets apart', async () => {
    const { store, xadd, apply } = isolated();
    const [e1, e2] = await xadd(2);
    await apply([
      entry(e1, change('1', { op: 'addMember', set: 'pages', member: 'https://x.example/a' })),
      entry(
        e2,
        change('1', { op: 'addMember', set: 'friends', member: '7' }, { op: 'addMember', set: 'pages', member: 'b:c' }),
      ),
    ]);
    expect((await store.read('1'))?.sets).toEqual({ pages: ['https://x.example/a', 'b:c'], friends: ['7'] });
  });
});

describe('remove and replaceFields', () => {
  it('remove hides the snapshot and clears its fields but keeps its sets and counters', async () => {
    const { store, xadd, apply } = isolated();
    const [e1, e2, e3] = await xadd(3);
    await apply([
      entry(e1, change('1', { op: 'create' }, { op: 'setFields', fields: { name: 'A', city: 'B' } })),
      entry(
        e2,
        change('1', { op: 'addMember', set: 'friends', member: '2' }, { op: 'increment', counter: 'like', by: 4 }),
      ),
    ]);
    await apply([entry(e3, change('1', { op: 'remove' }))]);
    const removed = await store.read('1');
    expect(removed).toEqual({
      id: '1',
      exists: false,
      revision: 3,
      fields: {},
      sets: { friends: ['2'] },
      counters: { like: 4 },
    });
    const hash = await ctx.redis.hgetall(store.key('1'));
    expect(Object.keys(hash).filter((k) => k.startsWith('f:') || k === '_exists')).toEqual([]);
  });

  it('create after remove makes the snapshot visible again', async () => {
    const { store, xadd, apply } = isolated();
    const [e1, e2, e3] = await xadd(3);
    await apply([
      entry(e1, change('1', { op: 'create' }, { op: 'setFields', fields: { name: 'A' } })),
      entry(e2, change('1', { op: 'remove' })),
      entry(e3, change('1', { op: 'replaceFields', fields: { name: 'B' } }, { op: 'create' })),
    ]);
    expect(await store.read('1')).toMatchObject({ exists: true, fields: { name: 'B' } });
  });

  it('replaceFields drops the fields it does not name', async () => {
    const { store, xadd, apply } = isolated();
    const [e1, e2] = await xadd(2);
    await apply([
      entry(e1, change('1', { op: 'create' }, { op: 'setFields', fields: { name: 'A', surname: 'B', age: 3 } })),
    ]);
    await apply([entry(e2, change('1', { op: 'replaceFields', fields: { name: 'C', nick: { x: [1] } } }))]);
    const snapshot = await store.read('1');
    expect(snapshot?.fields).toEqual({ name: 'C', nick: { x: [1] } });
    expect(snapshot?.exists).toBe(true);
    expect(
      Object.keys(await ctx.redis.hgetall(store.key('1')))
        .filter((k) => k.startsWith('f:'))
        .sort(),
    ).toEqual(['f:name', 'f:nick']);
  });
});

describe('invalid input is refused before anything is written', () => {
  it('throws InvalidSnapshotIdError for an id that cannot name a key', async () => {
    const { store, xadd, apply, stream } = isolated();
    const [e1, e2] = await xadd(2);
    for (const id of ['', 'a:b', 'with space', 'x'.repeat(65), '../1']) {
      const error = await rejection(
        apply([entry(e1, change('ok', { op: 'create' })), entry(e2, change(id, { op: 'create' }))]),
      );
      expect(error).toBeInstanceOf(InvalidSnapshotIdError);
      expect((error as InvalidSnapshotIdError).code).toBe('RS_SNAPSHOT_ID_INVALID');
    }
    expect(await store.cursor(stream)).toBe('0-0');
    expect(await store.read('ok')).toBeUndefined();
    expect(() => store.key('a:b')).toThrow(InvalidSnapshotIdError);
    expect(await rejection(store.read('a b'))).toBeInstanceOf(InvalidSnapshotIdError);
  });

  it('throws InvalidMutationError for a bad field, set or counter name, a bad op or a non-integer increment', async () => {
    const { store, xadd, apply, stream } = isolated();
    const [e1, e2] = await xadd(2);
    const bad: Mutation[] = [
      { op: 'setFields', fields: { 'bad-name': 1 } },
      { op: 'replaceFields', fields: { '1st': 1 } },
      { op: 'unsetFields', names: ['f:x'] },
      { op: 'addMember', set: 'a:b', member: 'x' },
      { op: 'removeMember', set: '', member: 'x' },
      { op: 'increment', counter: 'has space' },
      { op: 'increment', counter: 'n', by: 1.5 },
      { op: 'explode' } as unknown as Mutation,
    ];
    for (const mutation of bad) {
      const error = await rejection(
        apply([entry(e1, change('1', { op: 'create' })), entry(e2, change('1', mutation))]),
      );
      expect(error, JSON.stringify(mutation)).toBeInstanceOf(InvalidMutationError);
      expect((error as InvalidMutationError).code).toBe('RS_MUTATION_INVALID');
    }
    expect(await store.cursor(stream)).toBe('0-0');
    expect(await store.read('1')).toBeUndefined();
  });
});

describe('cursor()', () => {
  it("is '0-0' before anything is applied and then the last applied entry id", async () => {
    const { store, xadd, apply, stream } = isolated();
    expect(await store.cursor(stream)).toBe('0-0');
    const [e1, e2, e3] = await xadd(3);
    await apply([entry(e1, change('1', { op: 'create' })), entry(e2, change('1', { op: 'increment', counter: 'n' }))]);
    expect(await store.cursor(stream)).toBe(e2);
    expect(await ctx.redis.get(store.cursorKey(stream))).toBe(e2);
    // A skipped or blocked batch does not move it.
    await apply([entry(e1, change('1', { op: 'create' }))]);
    expect(await store.cursor(stream)).toBe(e2);
    await apply([entry(e3, change('1', { op: 'increment', counter: 'n' }))]);
    expect(await store.cursor(stream)).toBe(e3);
  });

  it('is kept per projection', async () => {
    const { store, xadd, stream, deadLetterStream } = isolated();
    const rebuild = new SnapshotStore({ redis: ctx.redis, keyPrefix: `${unique('rebuild')}_`, projection: 'rebuild' });
    const [e1] = await xadd(1);
    await store.applyBatch({ stream, deadLetterStream, entries: [entry(e1, change('1', { op: 'create' }))] });
    expect(await store.cursor(stream)).toBe(e1);
    expect(await rebuild.cursor(stream)).toBe('0-0');
    expect(
      (await rebuild.applyBatch({ stream, deadLetterStream, entries: [entry(e1, change('1', { op: 'create' }))] }))
        .applied,
    ).toBe(1);
  });
});

describe('reading with a fields schema', () => {
  it('throws CorruptSnapshotError for fields the schema rejects', async () => {
    const { xadd, stream, deadLetterStream } = isolated();
    const typed = new SnapshotStore({
      redis: ctx.redis,
      keyPrefix: `${unique('typed')}_`,
      fieldsSchema: z.object({ name: z.string() }),
    });
    const [e1, e2] = await xadd(2);
    await typed.applyBatch({
      stream,
      deadLetterStream,
      entries: [
        entry(e1, change('good', { op: 'create' }, { op: 'setFields', fields: { name: 'A' } })),
        entry(e2, change('bad', { op: 'setFields', fields: { name: 5 } })),
      ],
    });
    expect((await typed.read('good'))?.fields).toEqual({ name: 'A' });
    expect(await rejection(typed.read('bad'))).toBeInstanceOf(CorruptSnapshotError);
  });
});

describe('regressions: order of set members added within one entry', () => {
  it('keeps the op order of several addMember ops on one set in one entry, and orders across entries by entry', async () => {
    const { store, xadd, apply } = isolated();
    const [e1, e2] = await xadd(2);
    const add = (member: string): Mutation => ({ op: 'addMember', set: 'tags', member });
    await apply([entry(e1, change('1', add('c'), add('a'), add('b')))]);
    expect((await store.read('1'))?.sets['tags']).toEqual(['c', 'a', 'b']);

    // A later entry's members come after, whatever their names or op places.
    await apply([entry(e2, change('1', { op: 'increment', counter: 'n' }, add('z'), add('0'), add('a')))]);
    expect((await store.read('1'))?.sets['tags']).toEqual(['c', 'a', 'b', 'z', '0']);
  });

  it('orders by the op place as a number, also past nine ops in one entry', async () => {
    const { store, xadd, apply } = isolated();
    const [e1] = await xadd(1);
    // Reverse alphabetical, and twelve ops: a text comparison of '10' and '2' would misplace them.
    const members = ['l', 'k', 'j', 'i', 'h', 'g', 'f', 'e', 'd', 'c', 'b', 'a'];
    await apply([
      entry(e1, change('1', ...members.map((member): Mutation => ({ op: 'addMember', set: 'tags', member })))),
    ]);
    expect((await store.read('1'))?.sets['tags']).toEqual(members);
  });

  it('keeps the order when the same batch is applied again', async () => {
    const { store, xadd, apply } = isolated();
    const [e1, e2] = await xadd(2);
    const batch = [
      entry(
        e1,
        change('1', { op: 'addMember', set: 'tags', member: 'y' }, { op: 'addMember', set: 'tags', member: 'x' }),
      ),
      entry(
        e2,
        change('1', { op: 'addMember', set: 'tags', member: 'b' }, { op: 'addMember', set: 'tags', member: 'a' }),
      ),
    ];
    await apply(batch);
    await apply(batch);
    expect((await store.read('1'))?.sets['tags']).toEqual(['y', 'x', 'b', 'a']);
  });
});

describe('regressions: a snapshot key that is not a hash', () => {
  it('dead-letters only the entry that touches it, applies the others once, and a re-apply changes nothing', async () => {
    const { store, xadd, apply, stream, deadLetterStream } = isolated();
    const badKey = store.key('bad');
    await ctx.redis.set(badKey, 'x');
    const [e1, e2, e3] = await xadd(3);
    const batch = [
      entry(e1, change('good1', { op: 'create' }, { op: 'increment', counter: 'n' })),
      // The good change comes first in the entry: it must not be applied when the entry is dead-lettered.
      entry(
        e2,
        change('good2', { op: 'create' }, { op: 'increment', counter: 'n' }),
        change('bad', { op: 'increment', counter: 'n' }),
      ),
      entry(e3, change('good1', { op: 'increment', counter: 'n', by: 10 })),
    ];

    const first = await apply(batch);
    expect(first).toEqual({
      applied: 2,
      skipped: 0,
      deadLettered: 1,
      blockedAt: undefined,
      handled: 3,
      cursor: e3,
      held: false,
    });
    expect(await store.cursor(stream)).toBe(e3);
    expect(await store.read('good1')).toMatchObject({ exists: true, counters: { n: 11 } });
    expect(await store.read('good2')).toBeUndefined();
    expect(await ctx.redis.exists(store.key('good2'))).toBe(0);
    expect(await ctx.redis.type(badKey)).toBe('string');
    expect(await ctx.redis.get(badKey)).toBe('x');

    const dead = await ctx.redis.xrange(deadLetterStream, '-', '+');
    expect(dead).toHaveLength(1);
    const record = fieldsOf(dead[0]?.[1] ?? []);
    expect(record['entry_id']).toBe(e2);
    expect(record['stream']).toBe(stream);
    expect(record['reason']).toContain('RS_SNAPSHOT_KEY_WRONGTYPE');
    expect(record['reason']).toContain(badKey);
    expect(await store.totals(stream)).toEqual({ applied: 2, skipped: 0, deadLettered: 1 });

    const before = [await ctx.redis.hgetall(store.key('good1')), await ctx.redis.exists(store.key('good2'))];
    const again = await apply(batch);
    expect(again).toEqual({
      applied: 0,
      skipped: 3,
      deadLettered: 0,
      blockedAt: undefined,
      handled: 3,
      cursor: e3,
      held: false,
    });
    expect([await ctx.redis.hgetall(store.key('good1')), await ctx.redis.exists(store.key('good2'))]).toEqual(before);
    expect(await ctx.redis.xlen(deadLetterStream)).toBe(1);
    expect(await store.totals(stream)).toEqual({ applied: 2, skipped: 3, deadLettered: 1 });
    expect(await ctx.redis.get(badKey)).toBe('x');
  });

  it('acks the dead-lettered entry with the others', async () => {
    const { store, xadd, apply, stream } = isolated();
    const group = unique('group');
    await ctx.redis.lpush(store.key('list'), 'x');
    const [e1, e2] = await xadd(2);
    await ctx.redis.xgroup('CREATE', stream, group, '0');
    await ctx.redis.xreadgroup('GROUP', group, 'c1', 'STREAMS', stream, '>');
    const result = await apply(
      [entry(e1, change('list', { op: 'create' })), entry(e2, change('ok', { op: 'create' }))],
      group,
    );
    expect(result).toMatchObject({ applied: 1, deadLettered: 1, handled: 2, cursor: e2, held: false });
    expect(await pendingCount(ctx.redis, stream, group)).toBe(0);
    expect(await store.read('ok')).toMatchObject({ exists: true });
  });
});

describe('regressions: a change with no mutations', () => {
  it('creates no hash, alone or beside a change that does something', async () => {
    const { store, xadd, apply, stream } = isolated();
    const [e1, e2, e3] = await xadd(3);
    const result = await apply([
      entry(e1, change('empty')),
      entry(e2, change('alsoEmpty', { op: 'setFields', fields: {} }), change('real', { op: 'create' })),
      entry(
        e3,
        change('undefinedOnly', { op: 'setFields', fields: { a: undefined } }),
        change('noNames', { op: 'unsetFields', names: [] }),
      ),
    ]);
    expect(result).toMatchObject({ applied: 3, handled: 3, cursor: e3, held: false });
    expect(await store.cursor(stream)).toBe(e3);
    for (const id of ['empty', 'alsoEmpty', 'undefinedOnly', 'noNames']) {
      expect(await store.read(id), id).toBeUndefined();
      expect(await ctx.redis.exists(store.key(id)), id).toBe(0);
    }
    expect(await store.read('real')).toMatchObject({ exists: true, revision: 1 });
  });

  it('leaves the revision of an existing snapshot alone', async () => {
    const { store, xadd, apply } = isolated();
    const [e1, e2] = await xadd(2);
    await apply([entry(e1, change('1', { op: 'create' }))]);
    await apply([entry(e2, change('1'))]);
    expect((await store.read('1'))?.revision).toBe(1);
  });
});

describe('totals, resetProgress and hold', () => {
  it('totals() counts applied, skipped and dead-lettered entries across calls', async () => {
    const { store, xadd, apply, stream } = isolated();
    expect(await store.totals(stream)).toEqual({ applied: 0, skipped: 0, deadLettered: 0 });
    const [e1, e2, e3, e4] = await xadd(4);
    await apply([entry(e1, change('1', { op: 'create' })), deadLetter(e2, 'bad', ['a', 'b'])]);
    expect(await store.totals(stream)).toEqual({ applied: 1, skipped: 0, deadLettered: 1 });
    await apply([
      entry(e1, change('1', { op: 'create' })),
      deadLetter(e2, 'bad', ['a', 'b']),
      entry(e3, change('1', { op: 'increment', counter: 'n' })),
    ]);
    expect(await store.totals(stream)).toEqual({ applied: 2, skipped: 2, deadLettered: 1 });
    // A blocked batch counts nothing.
    const [, e6] = await xadd(2);
    expect((await apply([entry(e6, change('1', { op: 'increment', counter: 'n' }))])).blockedAt).toBe(e6);
    expect(await store.totals(stream)).toEqual({ applied: 2, skipped: 2, deadLettered: 1 });
    await apply([entry(e4, change('1', { op: 'increment', counter: 'n' }))]);
    expect(await store.totals(stream)).toEqual({ applied: 3, skipped: 2, deadLettered: 1 });
    // Totals are kept per projection.
    const other = new SnapshotStore({ redis: ctx.redis, keyPrefix: store.keyPrefix, projection: 'other' });
    expect(await other.totals(stream)).toEqual({ applied: 0, skipped: 0, deadLettered: 0 });
  });

  it("resetProgress() sets the cursor to '0-0' and clears the totals, so the stream is applied again from the top", async () => {
    const { store, xadd, apply, stream } = isolated();
    const [e1, e2] = await xadd(2);
    const batch = [
      entry(e1, change('1', { op: 'increment', counter: 'n' })),
      entry(e2, change('1', { op: 'increment', counter: 'n' })),
    ];
    await apply(batch);
    expect(await store.cursor(stream)).toBe(e2);
    await store.resetProgress(stream);
    expect(await store.cursor(stream)).toBe('0-0');
    expect(await ctx.redis.get(store.cursorKey(stream))).toBe('0-0');
    expect(await ctx.redis.exists(store.totalsKey(stream))).toBe(0);
    expect(await store.totals(stream)).toEqual({ applied: 0, skipped: 0, deadLettered: 0 });
    expect(await apply(batch)).toMatchObject({ applied: 2, skipped: 0, cursor: e2 });
    expect(await store.totals(stream)).toEqual({ applied: 2, skipped: 0, deadLettered: 0 });
  });

  it('hold() makes every apply return its first entry as blockedAt with nothing applied, until release()', async () => {
    const { store, xadd, apply, stream, deadLetterStream } = isolated();
    const group = unique('group');
    const [e1, e2, e3] = await xadd(3);
    await ctx.redis.xgroup('CREATE', stream, group, '0');
    await ctx.redis.xreadgroup('GROUP', group, 'c1', 'STREAMS', stream, '>');
    await apply([entry(e1, change('1', { op: 'create' }, { op: 'increment', counter: 'n' }))], group);
    const before = await ctx.redis.hgetall(store.key('1'));

    await store.hold(stream);
    expect(await store.isHeld(stream)).toBe(true);
    // Given out of order, already applied, new and dead-lettered: nothing goes through.
    const batch = [
      entry(e3, change('1', { op: 'increment', counter: 'n' })),
      entry(e1, change('1', { op: 'increment', counter: 'n' })),
      deadLetter(e2, 'bad', ['x', 'y']),
    ];
    const held = await apply(batch, group);
    expect(held).toEqual({
      applied: 0,
      skipped: 0,
      deadLettered: 0,
      blockedAt: e1,
      handled: 0,
      cursor: e1,
      held: true,
    });
    expect(await ctx.redis.hgetall(store.key('1'))).toEqual(before);
    expect(await ctx.redis.exists(deadLetterStream)).toBe(0);
    expect(await store.totals(stream)).toEqual({ applied: 1, skipped: 0, deadLettered: 0 });
    expect(await pendingCount(ctx.redis, stream, group)).toBe(2);

    await store.release(stream);
    expect(await store.isHeld(stream)).toBe(false);
    expect(await apply(batch, group)).toEqual({
      applied: 1,
      skipped: 1,
      deadLettered: 1,
      blockedAt: undefined,
      handled: 3,
      cursor: e3,
      held: false,
    });
    expect(await store.read('1')).toMatchObject({ exists: true, counters: { n: 2 } });
    expect(await pendingCount(ctx.redis, stream, group)).toBe(0);
  });
});

describe('options and entry ids are checked before anything is sent', () => {
  it('throws InvalidSnapshotStoreOptionsError for an empty keyPrefix (or one with other characters)', () => {
    for (const keyPrefix of ['', 'has space_', 'star*', 'x'.repeat(257)]) {
      let error: unknown;
      try {
        new SnapshotStore({ redis: ctx.redis, keyPrefix });
      } catch (caught) {
        error = caught;
      }
      expect(error, JSON.stringify(keyPrefix)).toBeInstanceOf(InvalidSnapshotStoreOptionsError);
      expect((error as InvalidSnapshotStoreOptionsError).code).toBe('RS_SNAPSHOT_OPTIONS_INVALID');
    }
    expect(new SnapshotStore({ redis: ctx.redis, keyPrefix: 'user:{snap}.v1-x_' }).keyPrefix).toBe('user:{snap}.v1-x_');
  });

  it("throws InvalidMutationError for an entry id like 'abc', without sending a command", async () => {
    const client = ctx.server.client();
    const stream = unique('stream');
    const deadLetterStream = unique('dead');
    const store = new SnapshotStore({ redis: client, keyPrefix: `${unique('snap')}_` });
    const e1 = String(await ctx.redis.xadd(stream, '*', 'n', '1'));
    await client.ping();
    const sent = vi.spyOn(client, 'sendCommand');
    try {
      for (const bad of ['abc', '', '1', '1-', '-1', '1-x', '1-2-3', ' 1-1']) {
        const error = await rejection(
          store.applyBatch({
            stream,
            deadLetterStream,
            entries: [entry(e1, change('1', { op: 'create' })), entry(bad, change('2', { op: 'create' }))],
          }),
        );
        expect(error, JSON.stringify(bad)).toBeInstanceOf(InvalidMutationError);
        expect((error as InvalidMutationError).code).toBe('RS_MUTATION_INVALID');
        expect((error as InvalidMutationError).message).toContain(`'${bad}'`);
      }
      expect(sent).not.toHaveBeenCalled();
      // The spy does see what a valid batch sends.
      expect(
        (await store.applyBatch({ stream, deadLetterStream, entries: [entry(e1, change('1', { op: 'create' }))] }))
          .applied,
      ).toBe(1);
      expect(sent).toHaveBeenCalled();
    } finally {
      sent.mockRestore();
    }
    expect(await store.cursor(stream)).toBe(e1);
    expect(await store.read('2')).toBeUndefined();
    expect(await ctx.redis.exists(deadLetterStream)).toBe(0);
  });
});

/** A stream entry's field list as a record. */
function fieldsOf(fields: readonly string[]): Record<string, string> {
  const record: Record<string, string> = {};
  for (let i = 0; i + 1 < fields.length; i += 2) record[fields[i] ?? ''] = fields[i + 1] ?? '';
  return record;
}

describe('entries that cannot be applied never stop a batch half-way', () => {
  it('dead-letters every single-change entry on a key of another type, however many there are in the batch', async () => {
    const { store, xadd, apply, stream, deadLetterStream } = isolated();
    await ctx.redis.set(store.key('u1'), 'a string');
    const [e1, e2, e3] = await xadd(3);
    const result = await apply([
      entry(e1, change('u1', { op: 'create' })),
      entry(e2, change('u1', { op: 'create' })),
      entry(e3, change('u2', { op: 'create' })),
    ]);
    expect(result).toMatchObject({ applied: 1, deadLettered: 2, handled: 3, cursor: e3 });
    expect(await ctx.redis.xlen(deadLetterStream)).toBe(2);
    expect(await ctx.redis.get(store.key('u1'))).toBe('a string');
    expect((await store.read('u2'))?.exists).toBe(true);
    expect(await store.cursor(stream)).toBe(e3);
  });

  it('dead-letters alone an entry whose change JSON cannot encode, and applies the others', async () => {
    const { store, xadd, apply, deadLetterStream } = isolated();
    const [e1, e2, e3] = await xadd(3);
    const result = await apply([
      entry(e1, change('1', { op: 'increment', counter: 'n' })),
      entry(e2, change('1', { op: 'setFields', fields: { big: 1n } })),
      entry(e3, change('1', { op: 'increment', counter: 'n' })),
    ]);
    expect(result).toMatchObject({ applied: 2, deadLettered: 1, handled: 3 });
    expect((await store.read('1'))?.counters['n']).toBe(2);
    const [dead] = await ctx.redis.xrange(deadLetterStream, '-', '+');
    expect(dead?.[1].join(' ')).toContain('RS_MUTATION_INVALID');
  });

  it('dead-letters an entry Redis refuses to write (a counter past 2^63) and goes on; a retry applies nothing twice', async () => {
    const { store, xadd, apply, deadLetterStream, stream } = isolated();
    const [e1, e2, e3] = await xadd(3);
    await ctx.redis.hset(store.key('full'), 'c:n', '9223372036854775807');
    const batch = [
      entry(e1, change('1', { op: 'increment', counter: 'n' })),
      entry(e2, change('full', { op: 'increment', counter: 'n' })),
      entry(e3, change('1', { op: 'increment', counter: 'n' }), change('full', { op: 'increment', counter: 'n' })),
    ];
    expect(await apply(batch)).toMatchObject({ applied: 1, deadLettered: 2, handled: 3, cursor: e3 });
    expect(await apply(batch)).toMatchObject({ applied: 0, skipped: 3 });
    // e3's first change was written before its second failed: it stays, counted as a change of that snapshot.
    expect((await store.read('1'))?.counters['n']).toBe(2);
    expect((await store.read('1'))?.revision).toBe(2);
    const letters = await ctx.redis.xrange(deadLetterStream, '-', '+');
    expect(letters).toHaveLength(2);
    expect(letters[0]?.[1].join(' ')).toContain('RS_APPLY_FAILED');
    expect(await store.totals(stream)).toEqual({ applied: 1, skipped: 3, deadLettered: 2 });
  });

  it('dead-letters alone an entry whose field holds a function (no JSON at all), and applies the others', async () => {
    const { store, xadd, apply, deadLetterStream } = isolated();
    const [e1, e2, e3] = await xadd(3);
    const result = await apply([
      entry(e1, change('1', { op: 'increment', counter: 'n' })),
      entry(e2, change('1', { op: 'setFields', fields: { f: () => 1 } })),
      entry(e3, change('1', { op: 'increment', counter: 'n' })),
    ]);
    expect(result).toMatchObject({ applied: 2, deadLettered: 1, handled: 3 });
    expect((await store.read('1'))?.counters['n']).toBe(2);
    const [dead] = await ctx.redis.xrange(deadLetterStream, '-', '+');
    expect(dead?.[1].join(' ')).toContain("field 'f' holds a function");
  });

  it('refuses an entry id given twice in one batch before sending anything (it would be applied twice)', async () => {
    const { stream, store, xadd, apply } = isolated();
    const [e1, e2] = await xadd(2);
    const bump = (entryId: string | undefined) => entry(entryId, change('1', { op: 'increment', counter: 'n' }));
    for (const batch of [
      [bump(e1), bump(e1)],
      [bump(e2), bump(e1), bump(e2)],
    ]) {
      const error = await rejection(apply(batch));
      expect(error).toBeInstanceOf(InvalidMutationError);
      expect(String(error)).toContain('is in the batch twice');
    }
    expect(await store.read('1')).toBeUndefined();
    expect(await store.cursor(stream)).toBe('0-0');
  });

  it('refuses a set member that is not a string before sending anything (a script would fail on it)', async () => {
    const { stream, store, xadd, apply } = isolated();
    const [e1] = await xadd(1);
    const member = undefined as unknown as string;
    const error = await rejection(apply([entry(e1, change('1', { op: 'addMember', set: 's', member }))]));
    expect(error).toBeInstanceOf(InvalidMutationError);
    expect(String(error)).toContain("member of set 's' must be a string, not undefined");
    expect(() => checkMutations([{ op: 'removeMember', set: 's', member: 7 as unknown as string }])).toThrow(
      InvalidMutationError,
    );
    expect(await store.cursor(stream)).toBe('0-0');
  });
});

describe('the packed batch argument', () => {
  it('carries any text: a set member with a lone UTF-16 surrogate is stored with U+FFFD (as UTF-8 encoding would), a field value exactly (it is JSON)', async () => {
    const { store, xadd, apply } = isolated();
    const [e1] = await xadd(1);
    const text = 'quote " backslash \\ newline \n emoji 😀 lone \ud800 end';
    const result = await apply([
      entry(
        e1,
        change(
          '1',
          { op: 'create' },
          { op: 'addMember', set: 'tags', member: text },
          { op: 'setFields', fields: { note: text } },
        ),
      ),
    ]);
    expect(result).toMatchObject({ applied: 1, deadLettered: 0 });
    const expected = text.replace('\ud800', '\ufffd');
    const snapshot = await store.read('1');
    expect(snapshot?.sets['tags']).toEqual([expected]);
    expect(snapshot?.fields['note']).toBe(text);
  });
});

describe('version(): which content of a snapshot hash is stored', () => {
  const incarnation = expect.stringMatching(/^\d+\.\d+$/) as unknown as string;

  it('moves with every change, and is what readVersioned() read with the hash', async () => {
    const { store, xadd, apply } = isolated();
    const [e1, e2] = await xadd(2);
    expect(await store.version('1')).toBeUndefined();
    await apply([entry(e1, change('1', { op: 'create' }, { op: 'setFields', fields: { name: 'A' } }))]);
    const first = await store.version('1');
    expect(first).toEqual({ incarnation, revision: '1' });
    expect((await store.readVersioned('1'))?.version).toEqual(first);
    await apply([entry(e2, change('1', { op: 'setFields', fields: { name: 'B' } }))]);
    const second = await store.readVersioned('1');
    expect(second?.version).toEqual({ incarnation: first?.incarnation, revision: '2' });
    expect(second?.version).toEqual(await store.version('1'));
    expect(second?.snapshot.fields).toEqual({ name: 'B' });
  });

  it('differs for a hash deleted and created again, though its _rev starts over at the same number', async () => {
    const { store, xadd, apply } = isolated();
    const [e1, e2] = await xadd(2);
    await apply([entry(e1, change('1', { op: 'create' }, { op: 'setFields', fields: { name: 'A' } }))]);
    const before = await store.version('1');
    await ctx.redis.unlink(store.key('1'));
    await apply([entry(e2, change('1', { op: 'create' }, { op: 'setFields', fields: { name: 'B' } }))]);
    const after = await store.version('1');
    expect(after).toEqual({ incarnation, revision: '1' });
    expect(after?.incarnation).not.toBe(before?.incarnation);
  });

  it('differs for another hash renamed over it with the same _rev (a rebuild switch)', async () => {
    const live = isolated();
    const shadow = isolated();
    const [e1] = await live.xadd(1);
    const [s1] = await shadow.xadd(1);
    await live.apply([entry(e1, change('1', { op: 'create' }, { op: 'setFields', fields: { name: 'old' } }))]);
    await shadow.apply([entry(s1, change('1', { op: 'create' }, { op: 'setFields', fields: { name: 'new' } }))]);
    const before = await live.store.version('1');
    await ctx.redis.rename(shadow.store.key('1'), live.store.key('1'));
    const after = await live.store.version('1');
    expect(after?.revision).toBe(before?.revision);
    expect(after?.incarnation).not.toBe(before?.incarnation);
  });

  it('has no incarnation for a hash written before _inc existed', async () => {
    const { store } = isolated();
    await ctx.redis.hset(store.key('1'), '_exists', '1', '_rev', '3');
    expect(await store.version('1')).toEqual({ incarnation: undefined, revision: '3' });
    expect((await store.readVersioned('1'))?.version).toEqual({ incarnation: undefined, revision: '3' });
  });
});
