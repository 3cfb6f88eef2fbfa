import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { Redis } from 'ioredis';
import { afterAll, afterEach, beforeAll } from 'vitest';
import type { StreamProcessor } from '@redsource/processor';
import { freePort, pings } from './net.ts';

export { freePort } from './net.ts';

/**
 * A real Redis for one test file: REDIS_URL if set (shared: tests must only touch keys they name
 * with `unique()`), otherwise a throwaway redis-server on a free port (which a fault test may stop,
 * kill and restart), otherwise a testcontainers Redis where a Docker engine runs.
 */
export interface TestRedis {
  readonly url: string;
  /** True when this harness started the server, so it may be stopped and restarted. */
  readonly owned: boolean;
  /** A new client; closed by `close()`. */
  client(): Redis;
  /** SIGKILL (no AOF fsync courtesy) or SHUTDOWN-like SIGTERM; then `restart()` brings it back on the same port and dir. */
  stop(signal?: 'SIGTERM' | 'SIGKILL'): Promise<void>;
  restart(): Promise<void>;
  close(): Promise<void>;
}

export interface TestRedisOptions {
  /** Append-only file on, so data survives restart(). */
  readonly aof?: boolean;
}

/** A name no other test (or anything else on a shared Redis) uses. */
export const unique = (base: string) => `${base}_t${randomBytes(4).toString('hex')}`;

export async function startTestRedis(options: TestRedisOptions = {}): Promise<TestRedis> {
  if (process.env['REDIS_URL']) return external(process.env['REDIS_URL']);
  if (spawnSync('redis-server', ['--version']).status === 0) return ownServer(options);
  return container();
}

/** A test file's Redis as `useTestRedis` gives it: `server` and `redis` are there from its `beforeAll` on. */
export interface TestRedisContext {
  readonly server: TestRedis;
  /** A client of `server` for the tests' own commands. */
  readonly redis: Redis;
  /** Stops `processor` after the current test; returns it. */
  track<P extends StreamProcessor>(processor: P): P;
}

/**
 * One Redis for the calling file (or describe block): started with one client in `beforeAll`, closed
 * in `afterAll`; processors given to `track` are stopped after each test. Call it before the file's
 * own hooks: its `beforeAll` then runs first and, vitest running after-hooks in reverse, its
 * `afterEach` and `afterAll` run last.
 */
export function useTestRedis(options: TestRedisOptions = {}): TestRedisContext {
  let started: { readonly server: TestRedis; readonly redis: Redis } | undefined;
  const running: StreamProcessor[] = [];
  beforeAll(async () => {
    const server = await startTestRedis(options);
    started = { server, redis: server.client() };
  });
  afterEach(async () => {
    await Promise.all(running.splice(0).map((p) => p.stop()));
  });
  afterAll(async () => {
    await started?.server.close();
  });
  const current = () => {
    if (!started) throw new Error('useTestRedis: Redis starts in beforeAll; use it from hooks and tests');
    return started;
  };
  return {
    get server() {
      return current().server;
    },
    get redis() {
      return current().redis;
    },
    track<P extends StreamProcessor>(processor: P): P {
      running.push(processor);
      return processor;
    },
  };
}

function withClients(
  url: string,
  extra: Pick<TestRedis, 'owned' | 'stop' | 'restart'> & { dispose: () => Promise<void> },
): TestRedis {
  const clients: Redis[] = [];
  return {
    url,
    owned: extra.owned,
    client() {
      const client = new Redis(url, { maxRetriesPerRequest: 3, retryStrategy: (n) => Math.min(50 * n, 500) });
      client.on('error', () => undefined);
      clients.push(client);
      return client;
    },
    stop: extra.stop,
    restart: extra.restart,
    async close() {
      for (const c of clients.splice(0)) c.disconnect();
      await extra.dispose();
    },
  };
}

function external(url: string): TestRedis {
  const cannot = async () => {
    throw new Error('This test stops Redis: it needs a redis-server of its own (unset REDIS_URL).');
  };
  return withClients(url, { owned: false, stop: cannot, restart: cannot, dispose: async () => undefined });
}

async function ownServer({ aof = false }: TestRedisOptions): Promise<TestRedis> {
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), 'redsource-test-redis-'));
  const args = [
    '--port',
    String(port),
    '--bind',
    '127.0.0.1',
    '--dir',
    dir,
    '--save',
    '',
    '--appendonly',
    aof ? 'yes' : 'no',
    '--appendfsync',
    'always',
    '--daemonize',
    'no',
  ];
  let child: ChildProcess | undefined;
  const url = `redis://127.0.0.1:${port}`;
  const start = async () => {
    child = spawn('redis-server', args, { stdio: 'ignore' });
    for (let i = 0; i < 200; i++) {
      if (await pings(port)) return;
      await sleep(25);
    }
    throw new Error(`redis-server on port ${port} did not start`);
  };
  const stop = async (signal: 'SIGTERM' | 'SIGKILL' = 'SIGKILL') => {
    const proc = child;
    // A process killed by a signal has signalCode set and exitCode null: it has exited all the same.
    if (!proc || proc.exitCode !== null || proc.signalCode !== null) return;
    const exited = new Promise((r) => proc.once('exit', r));
    proc.kill(signal);
    await exited;
  };
  await start();
  return withClients(url, {
    owned: true,
    stop,
    restart: start,
    dispose: async () => {
      await stop('SIGKILL');
      rmSync(dir, { recursive: true, force: true });
    },
  });
}

async function container(): Promise<TestRedis> {
  const { RedisContainer } = await import('@testcontainers/redis').catch(() => {
    throw new Error(
      'No Redis for tests: set REDIS_URL, put redis-server on PATH, or run a Docker engine for testcontainers.',
    );
  });
  const started = await new RedisContainer('redis:7.0').start();
  return withClients(started.getConnectionUrl(), {
    owned: true,
    stop: async () => {
      await started.stop();
    },
    restart: async () => {
      throw new Error('restart() is not supported on a testcontainers Redis; use a local redis-server.');
    },
    dispose: async () => {
      await started.stop();
    },
  });
}

/** How many entries of `stream` the consumer group `group` has pending (the count in XPENDING's summary). */
export const pendingCount = async (redis: Redis, stream: string, group: string) =>
  Number((await redis.xpending(stream, group))[0]);

/** Polls until `check` returns a truthy value or the time is up; returns the last value. */
export async function eventually<T>(check: () => Promise<T>, timeoutMs = 10_000, everyMs = 25): Promise<T> {
  const end = Date.now() + timeoutMs;
  let last = await check();
  while (!last && Date.now() < end) {
    await sleep(everyMs);
    last = await check();
  }
  return last;
}
