import type { Redis } from 'ioredis';
import { afterAll, describe, expect, it } from 'vitest';
import type { Logger } from '@redsource/processor';
import { connectCluster, parseRedisSeeds } from '../src/runtime/redis-connection.ts';
import { RedisFailureError, RedisWatch } from '../src/runtime/redis-watch.ts';
import { useTestCluster } from '../../../test/support/cluster.ts';
import { eventually, unique } from '../../../test/support/redis.ts';
import { rejection } from '../../../test/support/rejection.ts';

const PASSWORD = 'Cluster-Pa55-zq7LeakMarker';

/** A logger that keeps `level message` lines (and the objects, for the password check). */
function recording() {
  const lines: string[] = [];
  const at = (level: string) => (obj: object, msg?: string) =>
    lines.push(`${level} ${msg ?? ''} ${JSON.stringify(obj)}`);
  const logger: Logger = { debug: at('debug'), info: at('info'), warn: at('warn'), error: at('error') };
  return { lines, logger, said: (level: string) => lines.filter((l) => l.startsWith(`${level} `)) };
}

/** What a service's RedisWatch says about a Redis Cluster client: 'error' and 'node error' both, with the real cause. */
describe('RedisWatch on a Redis Cluster', () => {
  const ctx = useTestCluster({ nodeTimeoutMs: 15_000 });
  const opened: { redis: Redis; watch: RedisWatch }[] = [];
  afterAll(() => {
    for (const { redis, watch } of opened) {
      watch.dispose();
      redis.disconnect();
    }
  });

  const watched = (url: string) => {
    const log = recording();
    const redis = connectCluster(parseRedisSeeds(url), unique('watch'), undefined, {}) as unknown as Redis;
    const watch = new RedisWatch(redis, { url, source: 'REDIS_URL', stop: async () => undefined }, log.logger, true);
    opened.push({ redis, watch });
    return { ...log, redis, watch };
  };

  it('a wrong password is said once as a refused login (WRONGPASS), never as "not reachable", and never with the password', async () => {
    const { cluster } = ctx;
    for (const port of cluster.ports) {
      expect(await cluster.command(port, 'ACL', 'SETUSER', 'app', 'reset', 'on', `>${PASSWORD}`, '~*', '+@all')).toBe(
        'OK\n',
      );
    }
    const wrong = encodeURIComponent(`${PASSWORD}-wrong`);
    const url = cluster.ports.map((p) => `redis://app:${wrong}@127.0.0.1:${p}`).join(',');
    const { said, lines, watch } = watched(url);
    const warned = await eventually(async () => (said('warn').length > 0 ? said('warn') : undefined), 10_000, 50);
    expect(warned, lines.join('\n')).toHaveLength(1);
    expect(warned?.[0]).toMatch(
      /^warn Redis at 127\.0\.0\.1:\d+ refused the login for user app: check the user and password in REDIS_URL; retrying until it answers/,
    );
    expect(watch.downReason()).toMatch(/^WRONGPASS: Redis at 127\.0\.0\.1:\d+ refused the login for user app/);
    // A service's cluster client waits for the cluster (its commands queue); a one-shot client's command gives up.
    const oneShot = connectCluster(parseRedisSeeds(url), unique('oneshot'), undefined, {
      oneShot: true,
    }) as unknown as Redis;
    oneShot.on('error', () => undefined);
    opened.push({
      redis: oneShot,
      watch: new RedisWatch(
        oneShot,
        { url, source: 'REDIS_URL', stop: async () => undefined },
        recording().logger,
        false,
      ),
    });
    const failed = watch.explain(await rejection(oneShot.get('x')));
    expect(failed).toBeInstanceOf(RedisFailureError);
    expect((failed as RedisFailureError).kind).toBe('WRONGPASS');
    // More rounds of the same refusal: still one warning.
    await new Promise((r) => setTimeout(r, 1_500));
    expect(said('warn'), lines.join('\n')).toHaveLength(1);
    expect(lines.join('\n')).not.toMatch(/not reachable/);
    expect(lines.join('\n')).not.toContain('zq7LeakMarker');
  });

  it('a master lost while the cluster serves: said once, naming the node; and when it answers again', async () => {
    const { cluster } = ctx;
    const { said, lines, redis, watch } = watched(cluster.url);
    const key = unique('k');
    await redis.set(key, 'v');
    expect(watch.downReason()).toBeUndefined();
    const port = await cluster.nodeForKey(key);
    await cluster.kill(port);
    try {
      // Commands to its slots fail; the client keeps trying the node.
      await rejection(redis.get(key));
      await rejection(redis.get(key));
      const warned = await eventually(
        async () => said('warn').find((l) => l.includes(`127.0.0.1:${port}`)),
        10_000,
        50,
      );
      expect(warned, lines.join('\n')).toMatch(
        new RegExp(
          `^warn Redis Cluster node: Redis at 127\\.0\\.0\\.1:${port} is not reachable: .*; the cluster client retries and follows a failover`,
        ),
      );
      await rejection(redis.get(key));
      expect(
        said('warn').filter((l) => l.includes(`127.0.0.1:${port}`)),
        lines.join('\n'),
      ).toHaveLength(1);
    } finally {
      await cluster.restart(port);
    }
    await cluster.waitStable();
    expect(
      await eventually(
        async () =>
          (await redis.set(key, 'w').then(
            () => true,
            () => false,
          )) || undefined,
        15_000,
        100,
      ),
    ).toBe(true);
    expect(
      await eventually(
        async () => said('info').find((l) => l.includes(`Redis Cluster node 127.0.0.1:${port} answers again`)),
        10_000,
        50,
      ),
      lines.join('\n'),
    ).toBeDefined();
  });
});
