import { once } from 'node:events';
import { setTimeout as sleep } from 'node:timers/promises';
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
  try {
    await refuseCluster(redis, watch, service);
  } catch (error) {
    redis.disconnect();
    watch.dispose();
    await target.stop();
    throw error;
  }
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

/** REDIS_URL names a Redis Cluster node: the scripts and keys span slots, so nothing could be applied. */
export class ClusterNotSupportedError extends Error {
  readonly code = 'RS_CLUSTER_UNSUPPORTED';
  constructor(address: string) {
    super(
      `RS_CLUSTER_UNSUPPORTED: Redis at ${address} is a Redis Cluster node, and redsource does not run on Redis Cluster yet ` +
        '(its scripts span keys in several slots): point REDIS_URL at a standalone Redis (or the primary of a replicated one).',
    );
    this.name = 'ClusterNotSupportedError';
  }
}

/**
 * Refuses a Redis Cluster node at start, in one line, rather than retrying MOVED replies forever. A
 * one-shot command asks at once (an unreachable Redis fails it as usual); a service asks if Redis
 * answers within a second, and otherwise starts and waits for it as documented.
 */
async function refuseCluster(redis: Redis, watch: RedisWatch, service: boolean): Promise<void> {
  if (service) {
    // `once` rejects on the connection's 'error' (Redis away): then there is nothing to ask yet.
    const ready = await Promise.race([
      once(redis, 'ready').then(() => true, () => false),
      sleep(1_000, false, { ref: false }),
    ]);
    if (!ready) return;
  }
  const info = await redis.info('cluster').catch((error: unknown) => {
    if (service) return '';
    throw watch.explain(error);
  });
  if (/^cluster_enabled:1\s*$/m.test(info)) throw new ClusterNotSupportedError(watch.endpoint.address);
}
