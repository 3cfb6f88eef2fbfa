import type { Redis } from 'ioredis';
import type { Logger } from '@redsource/processor';
import type { AppConfig } from '../config.ts';
import { connectRedis, redisTls, resolveRedis, type RedisTarget } from './redis.ts';
import { logRedisTarget, RedisWatch } from './redis-watch.ts';

/** The Redis of one process: found (REDIS_URL, local, embedded), named once in the log, connected and watched. */
export interface OpenedRedis {
  readonly target: RedisTarget;
  readonly redis: Redis;
  readonly watch: RedisWatch;
  /** Closes the connection and stops the embedded redis-server, if this process started one. */
  close(): Promise<void>;
}

/**
 * `service`: `serve`, `api`, `process` (retry while Redis is away, and say so once); else a one-shot
 * command (give up within a few seconds: its failure is its one line, see RedisWatch.explain).
 */
export async function openRedis(command: string, config: AppConfig, logger: Logger, service: boolean): Promise<OpenedRedis> {
  const target = await resolveRedis(config, logger);
  logRedisTarget(logger, target);
  const redis = connectRedis(target.url, `redsource:${command}`, redisTls(config), { oneShot: !service });
  const watch = new RedisWatch(redis, target, logger, service);
  return {
    target,
    redis,
    watch,
    async close() {
      // QUIT waits for an answer: with Redis away it would wait out the retries.
      if (redis.status === 'ready') await redis.quit().catch(() => redis.disconnect());
      else redis.disconnect();
      watch.dispose();
      await target.stop();
    },
  };
}
