import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import type { FastifyInstance } from 'fastify';
import { DeadLetters, processorKeys, replay } from '@redsource/processor';
import { buildApp } from '../src/http/app.ts';
import { dlqCommand } from '../src/cli/dlq.ts';
import { eventually, useTestRedis } from '../../../test/support/redis.ts';
import { isolatedProfileSetup } from '../../../test/support/profile-setup.ts';
import { referenceFold, snapshotDifferences } from '../../../test/support/model.ts';

/** Issue 9, item 5: bytes that are not UTF-8 stay distinct, end to end. */
const ctx = useTestRedis();
let app: FastifyInstance;
let setup: ReturnType<typeof isolatedProfileSetup>;
let deadLetters: DeadLetters;

const bytes = (...parts: (string | number[])[]) =>
  Buffer.concat(parts.map((p) => (typeof p === 'string' ? Buffer.from(p) : Buffer.from(p))));
/** The entries as raw bytes, each with what its dead letter's reason must name (undefined: it applies). */
const entries = () => {
  const { updates, activity } = setup.streams;
  const envelope = (data: Buffer) => ['specversion', '1.0', 'id', 'e1', 'source', 'test', 'type', 'like', 'data', data];
  return [
    { stream: updates, fields: ['user_id', '1', 'command', 'register', 'name', 'N'], names: undefined },
    { stream: activity, fields: ['user_id', '1', 'command', 'like', 'object', bytes('P', [0xff])], names: "'object'" },
    { stream: activity, fields: ['user_id', '1', 'command', 'like', 'object', bytes('P', [0xfe])], names: "'object'" },
    {
      stream: activity,
      fields: ['user_id', '1', 'command', 'unlike', 'object', bytes('P', [0xfd])],
      names: "'object'",
    },
    // A genuine U+FFFD in valid UTF-8 is just a character.
    { stream: activity, fields: ['user_id', '1', 'command', 'like', 'object', 'P\ufffd'], names: undefined },
    {
      stream: activity,
      fields: ['user_id', '1', 'command', 'kick', bytes('na', [0xc3, 0x28], 'me'), 'v'],
      names: 'na\\xc3(me',
    },
    { stream: activity, fields: envelope(bytes('{"userId":"1","object":"Q', [0xff], '"}')), names: "'data'" },
  ];
};
const appended: string[] = [];

beforeAll(async () => {
  setup = isolatedProfileSetup(ctx.redis);
  deadLetters = new DeadLetters(ctx.redis);
  app = await buildApp({ snapshots: setup.snapshots, readiness: async () => ({ redis: true, processor: true }) });
  for (const entry of entries()) appended.push(String(await ctx.redis.xadd(entry.stream, '*', ...entry.fields)));
  const processor = setup.processor(ctx.server.client());
  await processor.start();
  const handled = async () => {
    let n = 0;
    for (const stream of [setup.streams.updates, setup.streams.activity]) {
      const t = await setup.snapshots.totals(stream);
      n += t.applied + t.deadLettered;
    }
    return n === appended.length;
  };
  await eventually(handled, 15_000);
  await processor.stop();
});
afterAll(async () => {
  await app.close();
});

/** What `redsource dlq <args>` writes to stdout, run on this test's dead letters. */
async function dlq(args: string[], flags = { json: false, all: false }): Promise<{ code: number; out: string }> {
  let out = '';
  let code = -1;
  const spy = vi.spyOn(process.stdout, 'write').mockImplementation((chunk: string | Uint8Array) => {
    out += String(chunk);
    return true;
  });
  try {
    const command = dlqCommand(async (body) => {
      code = await body({ deadLetters, streams: Object.values(setup.streams) });
    });
    await command.parseAsync([...args, ...(flags.json ? ['--json'] : []), ...(flags.all ? ['--all'] : [])], {
      from: 'user',
    });
    return { code, out };
  } finally {
    spy.mockRestore();
  }
}

describe('entries that are not UTF-8', () => {
  it('keeps three distinct pages distinct: not merged into one U+FFFD page, served as the fold says', async () => {
    const res = await app.inject({ method: 'GET', url: '/users/1/profile' });
    expect(res.statusCode).toBe(200);
    expect(res.json()).toMatchObject({ likedPages: ['P\ufffd'], activity: { like: 1 } });
    expect((await setup.snapshots.read('1'))?.sets['likedPages']).toEqual(['P\ufffd']);
  });

  it('dead-letters each with RS_NOT_UTF8 naming the field, or the field name when the name is not UTF-8', async () => {
    const letters = await deadLetters.list(setup.streams.activity);
    const expected = entries()
      .map((e, i) => ({ ...e, id: appended[i] }))
      .filter((e) => e.names !== undefined);
    expect(letters.map((l) => l.entryId)).toEqual(expected.map((e) => e.id));
    for (const [i, letter] of letters.entries()) {
      expect(letter.reason).toMatch(/^RS_NOT_UTF8: /);
      expect(letter.reason).toContain(expected[i]?.names);
    }
    expect(await deadLetters.count(setup.streams.updates)).toBe(0);
  });

  it('rebuilds to the same profiles and dead-letters nothing twice', async () => {
    const before = await ctx.redis.xlen(processorKeys.deadLetters(setup.streams.activity));
    await replay({
      redis: ctx.redis,
      eventStore: setup.eventStore,
      snapshots: setup.snapshots,
      handlers: setup.handlers,
      streams: [setup.streams.updates, setup.streams.activity],
    });
    expect((await setup.snapshots.read('1'))?.sets['likedPages']).toEqual(['P\ufffd']);
    expect(await ctx.redis.xlen(processorKeys.deadLetters(setup.streams.activity))).toBe(before);
  });

  it('equals the reference fold, which leaves out what is not UTF-8', async () => {
    const expected = await referenceFold(setup.eventStore, setup.streams, ctx.redis);
    expect(await snapshotDifferences(setup.snapshots, expected)).toEqual([]);
  });

  it('shows the original bytes escaped in dlq show, and in dlq show --json', async () => {
    const [first] = await deadLetters.list(setup.streams.activity);
    if (!first) throw new Error('expected a dead letter');
    const shown = await dlq(['show', setup.streams.activity, first.id]);
    expect(shown.code).toBe(0);
    expect(shown.out).toContain('fields: user_id 1 command like object P\\xff');
    expect(shown.out).toContain('reason: RS_NOT_UTF8');
    const json = await dlq(['show', setup.streams.activity, first.id], { json: true, all: false });
    expect(JSON.parse(json.out)).toMatchObject({
      entryId: appended[1],
      fields: ['user_id', '1', 'command', 'like', 'object', 'P\\xff'],
    });
    const listed = await dlq(['list', setup.streams.activity], { json: true, all: false });
    expect((JSON.parse(listed.out) as unknown[]).length).toBe(entries().filter((e) => e.names !== undefined).length);
  });

  it('appends exactly the original bytes again on dlq retry', async () => {
    const letters = await deadLetters.list(setup.streams.activity);
    for (const letter of letters) {
      const original = await ctx.redis.xrangeBuffer(setup.streams.activity, letter.entryId, letter.entryId);
      const retried = await dlq(['retry', setup.streams.activity, letter.id]);
      expect(retried.code).toBe(0);
      const newId = retried.out.trim().split(' ').at(-1) ?? '';
      const again = await ctx.redis.xrangeBuffer(setup.streams.activity, newId, newId);
      expect(again[0]?.[1]).toEqual(original[0]?.[1]);
    }
    expect(await deadLetters.count(setup.streams.activity)).toBe(0);
  });

  it('still reads, shows and retries a dead letter written before this change (fields as JSON text)', async () => {
    // A dead letter in the format before this change: the fields as JSON text, no exact bytes.
    const stream = setup.streams.friends;
    const id = String(
      await ctx.redis.xadd(
        processorKeys.deadLetters(stream),
        '*',
        'stream',
        stream,
        'entry_id',
        '1-1',
        'reason',
        'RS_ENTRY_UNDECODABLE: old',
        'fields',
        JSON.stringify(['user_id', '1', 'no_type', 'é']),
        'group',
        'g',
        'dead_at',
        '1700000000000',
      ),
    );
    const [letter] = await deadLetters.list(stream);
    expect(letter).toMatchObject({
      id,
      entryId: '1-1',
      fields: ['user_id', '1', 'no_type', 'é'],
      deadAt: 1700000000000,
    });
    const shown = await dlq(['show', stream, id]);
    expect(shown.out).toContain('fields: user_id 1 no_type é');
    const newId = await deadLetters.retry(stream, id);
    const [[, fields] = ['', []]] = await ctx.redis.xrange(stream, newId ?? '', newId ?? '');
    expect(fields).toEqual(['user_id', '1', 'no_type', 'é']);
  });
});
