import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FastifyInstance } from 'fastify';
import { buildApp } from '../src/http/app.ts';
import { useTestRedis } from '../../../test/support/redis.ts';
import { isolatedProfileSetup } from '../../../test/support/profile-setup.ts';
import { xaddAll } from '../../../test/support/model.ts';

const ctx = useTestRedis();
let app: FastifyInstance;
let setup: ReturnType<typeof isolatedProfileSetup>;
let redisUp = true;

beforeAll(async () => {
  setup = isolatedProfileSetup(ctx.redis);
  app = await buildApp({ snapshots: setup.snapshots, readiness: async () => ({ redis: redisUp, processor: true }) });
  await xaddAll(ctx.redis, [
    [
      setup.streams.updates,
      'user_id',
      '1',
      'command',
      'register',
      'name',
      'Duffy',
      'surename',
      'Duck',
      'birth_date',
      '1937-04-17',
    ],
    [setup.streams.updates, 'user_id', '9', 'command', 'register', 'name', 'Gone'],
    [setup.streams.updates, 'user_id', '9', 'command', 'delete'],
    [setup.streams.friends, 'user_id', '1', 'command', 'add', 'friend_id', '2'],
    [setup.streams.activity, 'user_id', '1', 'command', 'like', 'page', 'Looney'],
  ]);
  const processor = setup.processor(ctx.server.client());
  await processor.start();
  for (let i = 0; i < 100 && !(await setup.snapshots.read('1'))?.sets['likedPages']; i++)
    await new Promise((r) => setTimeout(r, 20));
  await processor.stop();
});
afterAll(async () => {
  await app.close();
});

describe('GET /users/:id/profile', () => {
  it('answers 200 with the profile JSON', async () => {
    const res = await app.inject({ method: 'GET', url: '/users/1/profile' });
    expect(res.statusCode).toBe(200);
    expect(res.json()).toEqual({
      id: '1',
      name: 'Duffy',
      surname: 'Duck',
      birth_date: '1937-04-17',
      friends: ['2'],
      likedPages: ['Looney'],
      activity: { like: 1 },
    });
  });

  it('answers 404 with a JSON error for an unknown or deleted user', async () => {
    for (const id of ['424242', '9']) {
      const res = await app.inject({ method: 'GET', url: `/users/${id}/profile` });
      expect(res.statusCode).toBe(404);
      expect(res.json()).toMatchObject({ statusCode: 404, code: 'RS_NOT_FOUND', message: expect.stringContaining(id) });
    }
  });

  it('answers 400 with what is allowed for a malformed id, never reading another key', async () => {
    for (const id of ['a:b', '*', 'x'.repeat(65), '%7Buser_updates%7D', '..%2F1']) {
      const res = await app.inject({ method: 'GET', url: `/users/${id}/profile` });
      expect(res.statusCode, id).toBe(400);
      expect(res.json()).toMatchObject({ code: 'RS_BAD_REQUEST', message: expect.stringContaining('A-Z, a-z, 0-9') });
    }
  });

  it('answers unknown routes with a JSON 404', async () => {
    const res = await app.inject({ method: 'GET', url: '/nope' });
    expect(res.statusCode).toBe(404);
    expect(res.json()).toMatchObject({ code: 'RS_NOT_FOUND' });
  });
});

describe('health', () => {
  it('/healthz answers while the process is up; /readyz follows Redis', async () => {
    expect((await app.inject('/healthz')).json()).toEqual({ status: 'ok' });
    expect((await app.inject('/readyz')).statusCode).toBe(200);
    redisUp = false;
    const down = await app.inject('/readyz');
    redisUp = true;
    expect(down.statusCode).toBe(503);
    expect(down.json()).toMatchObject({ status: 'not ready', redis: 'down' });
  });
});
