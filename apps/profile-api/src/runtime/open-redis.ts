import type { Redis } from 'ioredis';
import type { Logger } from '@redsource/processor';
import type { AppConfig } from '../config.ts';
import { connectRedis, redisTls, resolveRedis, type RedisTarget } from './redis.ts';
import { connectCluster, openRedisConnection, parseRedisSeeds, type RedisConnection } from './redis-connection.ts';
import { logRedisTarget, RedisFailureError, RedisWatch } from './redis-watch.ts';

/** The Redis of one process: found (REDIS_URL, local, embedded), named once in the log, connected and watched. */
export interface OpenedRedis {
  readonly target: RedisTarget;
  readonly redis: Redis;
  readonly watch: RedisWatch;
  /** Closes the connection and stops the embedded redis-server, if this process started one. */
  readonly close: () => Promise<void>;
}

/**
 * `service`: `serve`, `api`, `process` (retry while Redis is away, and say so once); else a one-shot
 * command (give up within a few seconds: its failure is its one line, see RedisWatch.explain).
 */
export async function openRedis(
  command: string,
  config: AppConfig,
  logger: Logger,
  service: boolean,
): Promise<OpenedRedis> {
  const target = await resolveRedis(config, logger);
  logRedisTarget(logger, target);
  let connection: RedisConnection;
  try {
    // The server says whether it is a Redis Cluster node; a service that finds no Redis yet starts
    // all the same (one node named: a standalone Redis) and waits for it, as documented.
    connection = await openRedisConnection(target.url, `redsource:${command}`, redisTls(config), {
      oneShot: !service,
      whenUnreachable: service ? 'guess' : 'throw',
    });
  } catch (error) {
    // A service starts whatever Redis answers (a refused login included) and says why it waits;
    // the mode is then what REDIS_URL suggests: several nodes a cluster, one a standalone Redis.
    if (service && error instanceof RedisFailureError) {
      connection = guessedConnection(target.url, `redsource:${command}`, redisTls(config));
    } else {
      await target.stop();
      throw error;
    }
  }
  if (connection.mode === 'cluster')
    logger.info(
      { redis: { cluster: true, answeredBy: connection.answeredBy } },
      'Redis is a Redis Cluster: using the cluster client',
    );
  // The Cluster client is passed around typed as Redis: the commands used are the same, and the few
  // places that must differ ask `isCluster` (SCAN per master, blocking reads, cross-slot applies).
  const redis = connection.client as unknown as Redis;
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

function guessedConnection(url: string, name: string, tls: ReturnType<typeof redisTls>): RedisConnection {
  const seeds = parseRedisSeeds(url);
  return seeds.seeds.length > 1
    ? { mode: 'cluster', client: connectCluster(seeds, name, tls), seeds, answeredBy: undefined }
    : { mode: 'standalone', client: connectRedis(seeds.url, name, tls), seeds, answeredBy: undefined };
}
