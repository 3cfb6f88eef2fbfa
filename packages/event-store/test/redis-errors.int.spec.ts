import { Cluster, Redis, type ClusterOptions } from 'ioredis';
import { afterAll, describe, expect, it } from 'vitest';
import { describeRedisUnavailable, isRedisUnavailable, redisUnavailableKind } from '../src/index.ts';
import { useTestCluster } from '../../../test/support/cluster.ts';
import { unique, useTestRedis } from '../../../test/support/redis.ts';

const failure = (promise: Promise<unknown>) =>
  promise.then(
    () => undefined,
    (error: unknown) => error,
  );

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
    const limited = new Redis(ctx.server.url, {
      username: user,
      password: 'pw',
      lazyConnect: true,
      enableReadyCheck: false,
    });
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

describe('redisUnavailableKind on a Redis Cluster (ioredis Cluster), as a real cluster reports it', () => {
  // A long node timeout: a killed master stays "gone" (no CLUSTERDOWN) for the length of the test.
  const ctx = useTestCluster({ nodeTimeoutMs: 15_000 });
  const clients: Cluster[] = [];
  const client = (options: ClusterOptions = {}) => {
    const c = ctx.cluster.client({ retryDelayOnFailover: 50, maxRedirections: 8, ...options });
    c.on('error', () => undefined);
    c.on('node error', () => undefined);
    clients.push(c);
    return c;
  };
  afterAll(() => {
    for (const c of clients) c.disconnect();
  });

  /** Two keys that hash to slots on different nodes. */
  const keysOnTwoNodes = async (): Promise<[string, string]> => {
    const first = unique('a');
    const firstNode = await ctx.cluster.nodeForKey(first);
    for (;;) {
      const other = unique('b');
      if ((await ctx.cluster.nodeForKey(other)) !== firstNode) return [first, other];
    }
  };

  it('keys of several slots or nodes are a bug, never "Redis unavailable": CROSSSLOT, a non local key, a pipeline across nodes', async () => {
    const redis = client();
    const [a, b] = await keysOnTwoNodes();
    const crossSlot = await failure(redis.mget(a, b));
    expect(String(crossSlot)).toMatch(/CROSSSLOT/);
    expect(redisUnavailableKind(crossSlot)).toBeUndefined();

    // A script given key `a` that touches `b` on another node.
    const nonLocal = await failure(redis.eval("return redis.call('GET', ARGV[1])", 1, a, b));
    expect(String(nonLocal)).toMatch(/non local key|same slot/);
    expect(redisUnavailableKind(nonLocal)).toBeUndefined();

    const pipelined = await failure(redis.pipeline().get(a).get(b).exec());
    expect(String(pipelined)).toMatch(/should belong to the same slot/);
    expect(redisUnavailableKind(pipelined)).toBeUndefined();

    // ioredis' own words for a cluster it cannot reach yet (enableOfflineQueue off) and one it closed.
    const offline = new Cluster([{ host: '127.0.0.1', port: ctx.cluster.ports[0] as number }], {
      enableOfflineQueue: false,
      lazyConnect: true,
    });
    clients.push(offline);
    const notReady = await failure(offline.get(a));
    expect(String(notReady)).toMatch(/Cluster isn't ready/);
    expect(redisUnavailableKind(notReady)).toBe('CONNECTION');
  });

  it('a refused login or permission, seen only in lastNodeError of "Failed to refresh slots cache.", is that and not "not reachable"', async () => {
    const { cluster } = ctx;
    for (const port of cluster.ports) {
      expect(await cluster.command(port, 'ACL', 'SETUSER', 'errs-app', 'reset', 'on', '>right', '~*', '+@all')).toBe(
        'OK\n',
      );
      expect(
        await cluster.command(
          port,
          'ACL',
          'SETUSER',
          'errs-noslots',
          'reset',
          'on',
          '>right',
          '~*',
          '+@all',
          '-cluster|slots',
        ),
      ).toBe('OK\n');
    }
    for (const [username, password, kind] of [
      ['errs-app', 'wrong', 'WRONGPASS'],
      ['errs-noslots', 'right', 'NOPERM'],
    ] as const) {
      const redis = client({
        redisOptions: { username, password },
        clusterRetryStrategy: () => null,
        enableReadyCheck: false,
      });
      const refreshFailed = new Promise<Error>((resolve) =>
        redis.on('error', (e: Error) => e.message.startsWith('Failed to refresh slots cache') && resolve(e)),
      );
      const command = await failure(redis.get('x'));
      const error = await refreshFailed;
      expect((error as { lastNodeError?: Error }).lastNodeError?.message, username).toMatch(new RegExp(`^${kind}`));
      expect(redisUnavailableKind(error), username).toBe(kind);
      expect(isRedisUnavailable(command), String(command)).toBe(true);
    }
  });

  it('a master gone (SIGKILL): "Too many Cluster redirections. Last error: ...Connection is closed." is Redis unreachable', async () => {
    const { cluster } = ctx;
    const redis = client();
    const key = unique('gone');
    await redis.set(key, 'v');
    const port = await cluster.nodeForKey(key);
    await cluster.kill(port);
    try {
      const error = await failure(redis.set(key, 'w'));
      expect(String(error)).toMatch(/^Error: Too many Cluster redirections\. Last error: /);
      expect(redisUnavailableKind(error)).toBe('CONNECTION');
      expect(describeRedisUnavailable('CONNECTION')).toMatch(/not reachable/);
    } finally {
      await cluster.restart(port);
    }
  });
});
