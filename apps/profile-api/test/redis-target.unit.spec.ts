import { describe, expect, it } from 'vitest';
import type { Logger } from '@redsource/processor';
import type { RedisTarget } from '../src/runtime/redis.ts';
import { quietRepeats } from '../src/runtime/components.ts';
import { explainKind, logRedisTarget, redisEndpoint } from '../src/runtime/redis-watch.ts';

const noop = async () => undefined;

function logged(target: RedisTarget): { obj: object; msg: string | undefined }[] {
  const lines: { obj: object; msg: string | undefined }[] = [];
  const logger: Logger = {
    debug: () => undefined,
    warn: () => undefined,
    error: () => undefined,
    info: (obj, msg) => lines.push({ obj, msg }),
  };
  logRedisTarget(logger, target);
  return lines;
}

describe('the Redis a process uses, as logged', () => {
  it('REDIS_URL with TLS, a user and a password: the password never appears', () => {
    const lines = logged({ url: 'rediss://ops:p%40ss-w0rd@redis.example.com:6380/2', source: 'REDIS_URL', stop: noop });
    expect(lines).toEqual([
      {
        obj: { redis: { address: 'redis.example.com:6380', tls: true, user: 'ops', db: 2, source: 'REDIS_URL' } },
        msg: 'using Redis at redis.example.com:6380 (TLS, user ops; from REDIS_URL)',
      },
    ]);
    expect(JSON.stringify(lines)).not.toMatch(/p%40ss|p@ss/);
  });

  it("a Redis Cluster's seed list: every node named, the first URL's user and TLS, never the password", () => {
    const lines = logged({
      url: 'rediss://ops:p%40ss@10.0.0.1:7000,rediss://ops:p%40ss@10.0.0.2:7001,10.0.0.3:7002',
      source: 'REDIS_URL',
      stop: noop,
    });
    expect(lines).toEqual([
      {
        obj: {
          redis: {
            address: '10.0.0.1:7000',
            cluster: true,
            seeds: ['10.0.0.1:7000', '10.0.0.2:7001', '10.0.0.3:7002'],
            tls: true,
            user: 'ops',
            db: 0,
            source: 'REDIS_URL',
          },
        },
        msg: 'using a Redis Cluster, seed nodes 10.0.0.1:7000, 10.0.0.2:7001, 10.0.0.3:7002 (TLS, user ops; from REDIS_URL)',
      },
    ]);
    expect(JSON.stringify(lines)).not.toMatch(/p%40ss|p@ss/);
    expect(redisEndpoint('redis://a:7000,redis://b:7001').address).toBe('a:7000');
  });

  it('the embedded redis-server: its port and data directory', () => {
    const [line] = logged({
      url: 'redis://127.0.0.1:6390',
      source: 'embedded',
      dataDir: '/srv/redsource/data',
      stop: noop,
    });
    expect(line?.msg).toBe(
      'using Redis at 127.0.0.1:6390 (no TLS, user default; REDIS_URL not set and nothing on 127.0.0.1:6379: an embedded redis-server this process started, data in /srv/redsource/data (AOF on))',
    );
    expect(line?.obj).toEqual({
      redis: {
        address: '127.0.0.1:6390',
        tls: false,
        user: 'default',
        db: 0,
        source: 'embedded',
        dataDir: '/srv/redsource/data',
      },
    });
  });

  it('the failure lines say what failed and what to check', () => {
    const at = redisEndpoint('redis://app:secret@10.0.0.5:6379');
    expect(explainKind('CONNECTION', at, 'connect ECONNREFUSED 10.0.0.5:6379')).toBe(
      'Redis at 10.0.0.5:6379 is not reachable: connect ECONNREFUSED 10.0.0.5:6379: check REDIS_URL / that Redis runs',
    );
    expect(explainKind('WRONGPASS', at, undefined)).toBe(
      'Redis at 10.0.0.5:6379 refused the login for user app: check the user and password in REDIS_URL',
    );
    expect(redisEndpoint('redis://[::1]:7000').address).toBe('[::1]:7000');
  });
});

describe("the processor's waits on Redis, said once", () => {
  it('a repeated wait goes to debug; a failing entry stays a warning each time', () => {
    const seen: string[] = [];
    const at = (level: string) => (_obj: object, msg?: string) => seen.push(`${level} ${msg ?? ''}`);
    const quiet = quietRepeats({ debug: at('debug'), info: at('info'), warn: at('warn'), error: at('error') });
    const wait = { err: 'connect ECONNREFUSED', waiting: 'CONNECTION: Redis is not reachable' };
    quiet.warn(wait, 'processor loop error; retrying');
    quiet.warn(wait, 'processor loop error; retrying');
    quiet.warn({ err: 'boom', entryId: '1-0' }, 'handler failed; retrying');
    quiet.warn({ err: 'boom', entryId: '1-0' }, 'handler failed; retrying');
    quiet.warn(wait, 'processor loop error; retrying');
    expect(seen).toEqual([
      'warn processor loop error; retrying',
      'debug processor loop error; retrying',
      'warn handler failed; retrying',
      'warn handler failed; retrying',
      'warn processor loop error; retrying',
    ]);
  });
});
