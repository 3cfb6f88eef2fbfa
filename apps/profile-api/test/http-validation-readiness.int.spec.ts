import { describe, expect, it } from 'vitest';
import { parseAfter } from '../src/http/read-your-writes.ts';
import { useTestRedis } from '../../../test/support/redis.ts';
import { useProfileApps } from './app-harness.ts';

const ctx = useTestRedis();
const apps = useProfileApps(ctx);

describe('?after= entry ids must fit Redis (two unsigned 64-bit numbers)', () => {
  it('answers 400 RS_BAD_REQUEST for a part above 18446744073709551615, at once, not 504 after the wait', async () => {
    const a = await apps.app();
    const s = apps.setup.streams.updates;
    for (const id of ['18446744073709551616-0', '0-18446744073709551616', '99999999999999999999-0']) {
      const started = Date.now();
      const res = await a.inject(`/users/1/profile?after=${s}:${id}&wait=100`);
      expect(res.statusCode, id).toBe(400);
      expect(res.json<{ code: string }>().code, id).toBe('RS_BAD_REQUEST');
      expect(Date.now() - started, id).toBeLessThan(100);
    }
    expect(parseAfter(`${s}:18446744073709551615-18446744073709551615`)).toEqual({
      stream: s,
      entryId: '18446744073709551615-18446744073709551615',
    });
    expect(parseAfter(`${s}:18446744073709551616-0`)).toBeUndefined();
  });
});

describe('/readyz says why Redis is down', () => {
  it('gives the reason (a refused login) with redis down, and no reason while it is up', async () => {
    const reason =
      'WRONGPASS: Redis at 127.0.0.1:6379 refused the login for user app: check the user and password in REDIS_URL';
    const down = await (
      await apps.app({ readiness: async () => ({ redis: false, redisReason: reason, processor: undefined }) })
    ).inject('/readyz');
    expect(down.statusCode).toBe(503);
    expect(down.json()).toMatchObject({ status: 'not ready', redis: 'down', reason });
    const up = await (
      await apps.app({ readiness: async () => ({ redis: true, redisReason: reason, processor: undefined }) })
    ).inject('/readyz');
    expect(up.statusCode).toBe(200);
    expect(up.json()).not.toHaveProperty('reason');
  });
});
