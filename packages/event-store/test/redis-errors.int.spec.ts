import { Redis } from 'ioredis';
import { describe, expect, it } from 'vitest';
import { describeRedisUnavailable, isRedisUnavailable, redisUnavailableKind } from '../src/index.ts';
import { unique, useTestRedis } from '../../../test/support/redis.ts';

const failure = (promise: Promise<unknown>) => promise.then(() => undefined, (error: unknown) => error);

describe('redisUnavailableKind: Redis refusing or unreachable, as real Redis reports it', () => {
  const ctx = useTestRedis();

  it('OOM under maxmemory is Redis unavailable, WRONGTYPE is not', async () => {
    const key = unique('k');
    await ctx.redis.set(unique('filler'), 'x'.repeat(100_000));
    await ctx.redis.config('SET', 'maxmemory', '1');
    try {
      const oom = await failure(ctx.redis.set(key, 'v'));
      expect(redisUnavailableKind(oom)).toBe('OOM');
    } finally {
      await ctx.redis.config('SET', 'maxmemory', '0');
    }
    await ctx.redis.set(key, 'v');
    const wrongType = await failure(ctx.redis.hset(key, 'f', 'v'));
    expect(wrongType).toBeInstanceOf(Error);
    expect(isRedisUnavailable(wrongType)).toBe(false);
  });

  it('NOSCRIPT, NOPERM and a refused connection are Redis unavailable', async () => {
    expect(redisUnavailableKind(await failure(ctx.redis.evalsha('0'.repeat(40), 0)))).toBe('NOSCRIPT');
    const user = unique('user');
    await ctx.redis.acl('SETUSER', user, 'on', '>pw', '~*', '+get');
    const limited = new Redis(ctx.server.url, { username: user, password: 'pw', lazyConnect: true, enableReadyCheck: false });
    try {
      await limited.connect();
      expect(redisUnavailableKind(await failure(limited.set(unique('k'), 'v')))).toBe('NOPERM');
    } finally {
      limited.disconnect();
      await ctx.redis.acl('DELUSER', user);
    }
    const nowhere = new Redis({ port: 1, lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null });
    nowhere.on('error', () => undefined);
    const refused = await failure(nowhere.connect());
    nowhere.disconnect();
    expect(redisUnavailableKind(refused)).toBe('CONNECTION');
    expect(describeRedisUnavailable('CONNECTION')).toMatch(/not reachable/);
  });

  it('an ordinary bug is not', () => {
    expect(isRedisUnavailable(new TypeError('x is undefined'))).toBe(false);
    expect(isRedisUnavailable('OOM')).toBe(false);
  });
});
