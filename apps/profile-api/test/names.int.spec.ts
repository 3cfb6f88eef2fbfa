import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FastifyInstance } from 'fastify';
import { processorKeys } from '@redsource/processor';
import { buildApp } from '../src/http/app.ts';
import { eventually, useTestRedis } from '../../../test/support/redis.ts';
import { isolatedProfileSetup } from '../../../test/support/profile-setup.ts';
import { referenceFold, snapshotDifferences, xaddAll, type RawCommand } from '../../../test/support/model.ts';

/** Issue 9, item 4: names that are Object.prototype members, end to end through Redis and HTTP. */
const ctx = useTestRedis();
let app: FastifyInstance;
let setup: ReturnType<typeof isolatedProfileSetup>;
let appended = 0;

const NAMES = ['constructor', 'toString', 'valueOf', 'hasOwnProperty', '__proto__'];
/** `data` as JSON text: the envelope as another client would write it. */
const envelope = (stream: string, type: string, data: string): RawCommand => [
  stream,
  'specversion',
  '1.0',
  'id',
  `id-${appended++}`,
  'source',
  'test',
  'type',
  type,
  'data',
  data,
];

beforeAll(async () => {
  setup = isolatedProfileSetup(ctx.redis);
  app = await buildApp({ snapshots: setup.snapshots, readiness: async () => ({ redis: true, processor: true }) });
  const { updates, activity } = setup.streams;
  const commands: RawCommand[] = [];
  for (const [i, name] of NAMES.entries()) {
    // Flat form: user 2i; envelope form: user 2i+1. Each name as a personal field, a command, a page.
    const [a, b] = [String(20 + 2 * i), String(21 + 2 * i)];
    commands.push(
      [updates, 'user_id', a, 'command', 'register', 'name', 'S', name, 'c'],
      [updates, 'user_id', a, 'command', 'update', name, 'd'],
      [activity, 'user_id', a, 'command', name],
      [activity, 'user_id', a, 'command', name, 'object', 'x'],
      [activity, 'user_id', a, 'command', 'like', 'object', name],
      envelope(updates, 'register', `{"userId":"${b}","name":"S",${JSON.stringify(name)}:{"nested":"c"}}`),
      envelope(activity, name, `{"userId":"${b}"}`),
      envelope(activity, 'like', `{"userId":"${b}","object":${JSON.stringify(name)}}`),
      envelope(activity, 'kick', `{"userId":"${b}",${JSON.stringify(name)}:"extra"}`),
    );
  }
  await xaddAll(ctx.redis, commands);
  appended = commands.length;
  const processor = setup.processor(ctx.server.client());
  await processor.start();
  const totals = async () => {
    let handled = 0;
    for (const stream of [updates, activity]) {
      const t = await setup.snapshots.totals(stream);
      handled += t.applied + t.deadLettered;
    }
    return handled === appended;
  };
  await eventually(totals, 15_000);
  await processor.stop();
});
afterAll(async () => {
  await app.close();
});

const profile = async (id: string) => {
  const res = await app.inject({ method: 'GET', url: `/users/${id}/profile` });
  expect(res.statusCode, res.body).toBe(200);
  return { body: res.body, json: JSON.parse(res.body) as Record<string, unknown> };
};
const own = (value: unknown, key: string) =>
  value !== null && typeof value === 'object' && Object.hasOwn(value, key)
    ? (value as Record<string, unknown>)[key]
    : 'missing';

describe('names that are Object.prototype members, through the processor and the API', () => {
  it('dead-letters none of them', async () => {
    for (const stream of Object.values(setup.streams))
      expect(await ctx.redis.xlen(processorKeys.deadLetters(stream))).toBe(0);
  });

  for (const [i, name] of NAMES.entries()) {
    it(`serves '${name}' as written: a personal field, an activity counter and a liked page (flat form)`, async () => {
      const id = String(20 + 2 * i);
      const { body, json } = await profile(id);
      expect(body).toContain(`${JSON.stringify(name)}:"d"`);
      expect(own(json, name)).toBe('d');
      expect(own(json['activity'], name)).toBe(2);
      expect(own(json['activity'], 'like')).toBe(1);
      expect(json['likedPages']).toEqual([name]);
      const snapshot = await setup.snapshots.read(id);
      expect(own(snapshot?.fields, name)).toBe('d');
      expect(own(snapshot?.counters, name)).toBe(2);
      expect(snapshot?.sets['likedPages']).toEqual([name]);
    });

    it(`serves '${name}' as written (CloudEvents envelope with JSON data)`, async () => {
      const id = String(21 + 2 * i);
      const { json } = await profile(id);
      expect(own(json, name)).toEqual({ nested: 'c' });
      expect(own(json['activity'], name)).toBe(1);
      expect(own(json['activity'], 'kick')).toBe(1);
      expect(json['likedPages']).toEqual([name]);
    });
  }

  it('equals the reference fold of the streams', async () => {
    const expected = await referenceFold(setup.eventStore, setup.streams);
    expect(expected.size).toBe(2 * NAMES.length);
    expect(await snapshotDifferences(setup.snapshots, expected)).toEqual([]);
  });
});
