import { spawnSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { RedisServerError, startRedis } from '../src/index.ts';

const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

describe('startRedis', () => {
  it.skipIf(spawnSync('redis-server', ['--version']).status !== 0)(
    'starts a throwaway redis-server without persistence and stops it by pid',
    async () => {
      const server = await startRedis({ url: null });
      const redis = server.client();
      try {
        expect(server.owned).toBe(true);
        expect(server.url).toMatch(/^redis:\/\/127\.0\.0\.1:\d+$/);
        expect(await redis.ping()).toBe('PONG');
        expect(await redis.config('GET', 'save')).toEqual(['save', '']);
        expect(await redis.config('GET', 'appendonly')).toEqual(['appendonly', 'no']);
      } finally {
        await server.stop();
      }
      expect(server.pid).toBeTypeOf('number');
      expect(alive(server.pid ?? 0)).toBe(false);
      expect(redis.status).toBe('end');
    },
  );

  it('uses the server REDIS_URL names: stop() only disconnects its clients', async () => {
    const shared = await startRedis();
    try {
      const server = await startRedis({ url: shared.url });
      const redis = server.client();
      expect(server.owned).toBe(false);
      expect(server.pid).toBeUndefined();
      expect(await redis.ping()).toBe('PONG');
      await server.stop();
      expect(redis.status).toBe('end');
      expect(await shared.client().ping()).toBe('PONG'); // still up
    } finally {
      await shared.stop();
    }
  });

  it('rejects with RedisServerError when redis-server is not on PATH', async () => {
    const error: unknown = await startRedis({ url: null, command: 'redis-server-that-is-not-there' }).catch(
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(RedisServerError);
    expect(error).toMatchObject({ code: 'RS_REDIS_SERVER_NOT_FOUND' });
    expect(String(error)).toMatch(/is not on PATH: install Redis .* or set REDIS_URL/);
  });
});
