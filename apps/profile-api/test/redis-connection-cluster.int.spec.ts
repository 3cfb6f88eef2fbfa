import { Cluster, Redis } from 'ioredis';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { ConfigError } from '../src/config.ts';
import {
  clusterErrorKind,
  connectCluster,
  detectRedisMode,
  openRedisConnection,
  parseRedisSeeds,
  RedisModeError,
  type RedisConnection,
} from '../src/runtime/redis-connection.ts';
import { unavailableKindOf } from '../src/runtime/redis.ts';
import { createRedactor } from '../src/runtime/redact.ts';
import { RedisFailureError } from '../src/runtime/redis-watch.ts';
import { useTestCluster } from '../../../test/support/cluster.ts';
import { freePort, startTestRedis, type TestRedis } from '../../../test/support/redis.ts';

// Characters that must be percent-encoded in a URL: the parser must decode them, no error may show them.
const PASSWORD = 'Pa55:w@rd/%+secret';
const ENCODED = encodeURIComponent(PASSWORD);

const opened: (Redis | Cluster)[] = [];
function keep(connection: RedisConnection): RedisConnection {
  connection.client.on('error', () => undefined);
  opened.push(connection.client);
  return connection;
}
afterEach(() => {
  for (const client of opened.splice(0)) client.disconnect();
});

/** The error a promise rejects with (fails the test if it resolves). */
async function rejection(promise: Promise<unknown>): Promise<Error> {
  try {
    await promise;
  } catch (error) {
    return error as Error;
  }
  throw new Error('expected a rejection');
}

/** Everything an error could show: message, stack, and its fields as JSON would serialise them. */
function shown(error: Error): string {
  return [error.message, error.stack ?? '', String(error), JSON.stringify(error)].join('\n');
}

function expectNoPassword(text: string): void {
  for (const secret of [PASSWORD, ENCODED, 'w@rd/%+secret', 'secret']) expect(text).not.toContain(secret);
}

describe('parseRedisSeeds', () => {
  it('takes one URL as one node, with its credentials and db', () => {
    const seeds = parseRedisSeeds(`rediss://app:${ENCODED}@redis.example:6380/2`);
    expect(seeds.seeds).toEqual([{ host: 'redis.example', port: 6380 }]);
    expect(seeds).toMatchObject({
      tls: true,
      username: 'app',
      password: PASSWORD,
      db: 2,
      endpoint: { address: 'redis.example:6380', user: 'app', tls: true },
    });
  });

  it('takes a comma-separated list of URLs, or bare host:port entries sharing the first URL’s credentials', () => {
    expect(parseRedisSeeds('redis://a:7000, redis://b:7001,redis://a:7000').seeds).toEqual([
      { host: 'a', port: 7000 },
      { host: 'b', port: 7001 },
    ]);
    const mixed = parseRedisSeeds(`redis://app:${ENCODED}@a:7000,b:7001,[::1]:7002,c`);
    expect(mixed.seeds).toEqual([
      { host: 'a', port: 7000 },
      { host: 'b', port: 7001 },
      { host: '::1', port: 7002 },
      { host: 'c', port: 6379 },
    ]);
    expect(mixed.password).toBe(PASSWORD);
    expect(parseRedisSeeds('127.0.0.1:7000,127.0.0.1:7001')).toMatchObject({
      tls: false,
      username: undefined,
      password: undefined,
      seeds: [{ port: 7000 }, { port: 7001 }],
    });
  });

  it('refuses lists whose nodes differ in credentials or scheme, and malformed entries, without showing a password', () => {
    const cases = [
      `redis://app:${ENCODED}@a:7000,redis://app:other${ENCODED}@b:7001`,
      `redis://app:${ENCODED}@a:7000,rediss://app:${ENCODED}@b:7001`,
      `redis://app:${ENCODED}@a:7000,app:${ENCODED}@b:7001`,
      `redis://app:${ENCODED}@a:7000,http://app:${ENCODED}@b:7001`,
      `redis://app:${ENCODED}@a:notaport`,
      `redis://app:${ENCODED}@a:7000/zero`,
    ];
    for (const value of cases) {
      const error = (() => {
        try {
          parseRedisSeeds(value);
        } catch (e) {
          return e as Error;
        }
        throw new Error(`accepted ${value}`);
      })();
      expect(error, value).toBeInstanceOf(ConfigError);
      expect(error.message).toMatch(/^REDIS_URL: /);
      expectNoPassword(shown(error));
    }
  });
});

describe('openRedisConnection', () => {
  const ctx = useTestCluster({ masters: 3, password: PASSWORD });
  let standalone: TestRedis;
  beforeAll(async () => {
    standalone = await startTestRedis();
  });
  afterAll(async () => {
    await standalone?.close();
  });
  const clusterUrl = (port: number, password = ENCODED) => `redis://:${password}@127.0.0.1:${port}`;

  it('detects a standalone Redis and returns a plain client', async () => {
    const seeds = parseRedisSeeds(standalone.url);
    expect((await detectRedisMode(seeds, undefined)).mode).toBe('standalone');
    const connection = keep(await openRedisConnection(standalone.url, 'test:standalone'));
    expect(connection.mode).toBe('standalone');
    expect(connection.client).toBeInstanceOf(Redis);
    expect(connection.client).not.toBeInstanceOf(Cluster);
    expect(await connection.client.ping()).toBe('PONG');
  });

  it('detects a cluster from one node and returns a Cluster client reading and writing on every master', async () => {
    const { cluster } = ctx;
    const connection = keep(await openRedisConnection(clusterUrl(cluster.ports[1] as number), 'test:cluster'));
    expect(connection.mode).toBe('cluster');
    expect(connection.answeredBy).toBe(`127.0.0.1:${cluster.ports[1]}`);
    const client = connection.client as Cluster;
    expect(client).toBeInstanceOf(Cluster);
    expect(client.options).toMatchObject({
      scaleReads: 'master',
      enableOfflineQueue: true,
      slotsRefreshTimeout: 2_000,
    });
    const keys = Array.from({ length: 20 }, (_, i) => `conn-key-${i}`);
    for (const key of keys) await client.set(key, key);
    for (const key of keys) expect(await client.get(key)).toBe(key);
    const owners = new Set(await Promise.all(keys.map((k) => cluster.nodeForKey(k))));
    expect(owners.size).toBe(3);
    // Its node connections carry the connection name (CLIENT LIST on a master shows it).
    expect(await cluster.command(cluster.ports[0] as number, 'CLIENT', 'LIST')).toContain('name=test:cluster');
  });

  it('takes a comma-separated seed list, and finds the cluster when the first seed is down', async () => {
    const { cluster } = ctx;
    const list = cluster.ports.map((p) => clusterUrl(p)).join(',');
    const connection = keep(await openRedisConnection(list, 'test:list'));
    expect(connection.mode).toBe('cluster');
    expect(connection.seeds.seeds).toHaveLength(3);
    expect(await connection.client.set('conn-list', '1')).toBe('OK');

    const dead = await freePort();
    const bare = `${clusterUrl(dead)},127.0.0.1:${cluster.ports[2]}`;
    const second = keep(await openRedisConnection(bare, 'test:bare'));
    expect(second.mode).toBe('cluster');
    expect(second.answeredBy).toBe(`127.0.0.1:${cluster.ports[2]}`);
    expect(await second.client.get('conn-list')).toBe('1');
  });

  it('detects a cluster for an ACL user without INFO (CLUSTER INFO answers)', async () => {
    const { cluster } = ctx;
    for (const port of cluster.ports) {
      expect(
        await cluster.command(port, 'ACL', 'SETUSER', 'noinfo', 'reset', 'on', '>noinfo-pass', '~*', '+@all', '-info'),
      ).toBe('OK\n');
    }
    const seeds = parseRedisSeeds(`redis://noinfo:noinfo-pass@127.0.0.1:${cluster.ports[0]}`);
    expect((await detectRedisMode(seeds, undefined)).mode).toBe('cluster');
  });

  it('names the missing permission when an ACL user may not run CLUSTER SLOTS or CLUSTER INFO', async () => {
    // ioredis itself only says "None of startup nodes is available" for such a user.
    const { cluster } = ctx;
    for (const [user, denied] of [
      ['noslots', 'cluster|slots'],
      ['noclusterinfo', 'cluster|info'],
    ] as const) {
      for (const port of cluster.ports) {
        expect(
          await cluster.command(
            port,
            'ACL',
            'SETUSER',
            user,
            'reset',
            'on',
            `>${PASSWORD}`,
            '~*',
            '+@all',
            `-${denied}`,
          ),
        ).toBe('OK\n');
      }
      const error = await rejection(
        openRedisConnection(`redis://${user}:${ENCODED}@127.0.0.1:${cluster.ports[0]}`, 'test'),
      );
      expect(error).toBeInstanceOf(RedisFailureError);
      expect((error as RedisFailureError).kind).toBe('NOPERM');
      expect(error.message).toBe(
        `Redis at 127.0.0.1:${cluster.ports[0]} is a Redis Cluster node, and user ${user} may not run CLUSTER ${denied.split('|')[1]?.toUpperCase()}, ` +
          'which a cluster client needs: add +cluster|slots +cluster|info to its ACL rules',
      );
      expectNoPassword(shown(error));
    }
  });

  it('refuses several nodes that are not a cluster, and a db on a cluster', async () => {
    const notCluster = await rejection(openRedisConnection(`${standalone.url},127.0.0.1:${await freePort()}`, 'test'));
    expect(notCluster).toBeInstanceOf(RedisModeError);
    expect(notCluster.message).toMatch(
      /^REDIS_URL lists 2 nodes, but Redis at 127\.0\.0\.1:\d+ is not a Redis Cluster node/,
    );

    const withDb = await rejection(openRedisConnection(`${clusterUrl(ctx.cluster.ports[0] as number)}/3`, 'test'));
    expect(withDb).toBeInstanceOf(RedisModeError);
    expect(withDb.message).toMatch(/a cluster has only database 0: remove \/3 from REDIS_URL/);
    expectNoPassword(shown(withDb));
  });

  it('a wrong password on a cluster fails in one line naming the node and user, never the password', async () => {
    const { cluster } = ctx;
    const wrong = encodeURIComponent(`${PASSWORD}-wrong`);
    const list = cluster.ports.map((p) => `redis://app:${wrong}@127.0.0.1:${p}`).join(',');
    const error = await rejection(openRedisConnection(list, 'test'));
    expect(error).toBeInstanceOf(RedisFailureError);
    expect((error as RedisFailureError).kind).toBe('WRONGPASS');
    expect(error.message).toBe(
      `Redis at 127.0.0.1:${cluster.ports[0]} refused the login for user app: check the user and password in REDIS_URL`,
    );
    expectNoPassword(shown(error));
    expect(shown(error)).not.toContain('wrong');

    // The cluster client itself, given a wrong password (no probe): a command fails with "Failed to
    // refresh slots cache." or "None of startup nodes is available", and the client emits "Failed to
    // refresh slots cache." errors that keep the refused AUTH, password included, in
    // `lastNodeError.command`. The kind is read from there (redisUnavailableKind, clusterErrorKind),
    // and the app's redactor hides the password wherever such an error is logged.
    const seeds = parseRedisSeeds(list);
    const client = connectCluster(seeds, 'test:wrongpass', undefined, { oneShot: true });
    const errors: Error[] = [];
    client.on('error', (e: Error) => errors.push(e));
    opened.push(client);
    const failed = await rejection(client.get('x'));
    expect(failed.message).toMatch(/^(Failed to refresh slots cache\.|None of startup nodes is available)$/);
    // "None of startup nodes is available" names no cause: CONNECTION; a refresh failure has its lastNodeError.
    expect(unavailableKindOf(failed)).toMatch(/^(CONNECTION|WRONGPASS)$/);
    const refreshFailure = errors.find((e) => e.message === 'Failed to refresh slots cache.');
    expect(refreshFailure, errors.map((e) => e.message).join('; ')).toBeDefined();
    expect(JSON.stringify(refreshFailure)).toContain(PASSWORD);
    expect(unavailableKindOf(refreshFailure)).toBe('WRONGPASS');
    expect(clusterErrorKind(refreshFailure)).toBe('WRONGPASS');
    const redactor = createRedactor();
    for (const e of [failed, ...errors]) {
      expectNoPassword(JSON.stringify(redactor.value(e)));
      expectNoPassword(shown(redactor.error(e)));
    }
  });

  it('no node answering: RedisFailureError (CONNECTION) naming the first, or a guess when asked to', async () => {
    const [a, b] = [await freePort(), await freePort()];
    const list = `redis://app:${ENCODED}@127.0.0.1:${a},127.0.0.1:${b}`;
    const error = await rejection(openRedisConnection(list, 'test', undefined, { timeoutMs: 500 }));
    expect(error).toBeInstanceOf(RedisFailureError);
    expect((error as RedisFailureError).kind).toBe('CONNECTION');
    expect(error.message).toMatch(
      new RegExp(
        `^none of the 2 Redis nodes in REDIS_URL answers; the first: Redis at 127\\.0\\.0\\.1:${a} is not reachable`,
      ),
    );
    expectNoPassword(shown(error));

    const guessed = keep(
      await openRedisConnection(list, 'test', undefined, { timeoutMs: 500, whenUnreachable: 'guess', oneShot: true }),
    );
    expect(guessed.mode).toBe('cluster');
    // A one-shot cluster client gives up within seconds, with an error read as "Redis unreachable".
    const started = Date.now();
    const gaveUp = await rejection(guessed.client.get('x'));
    expect(Date.now() - started).toBeLessThan(10_000);
    expect(unavailableKindOf(gaveUp)).toBe('CONNECTION');
  });
});
