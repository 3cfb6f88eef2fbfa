import { spawn, type ChildProcess } from 'node:child_process';
import { createServer } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { Redis, type RedisOptions } from 'ioredis';

/** A Redis for tests: a throwaway `redis-server` this process started, or the one `REDIS_URL` names. */
export interface TestRedisServer {
  /** `redis://127.0.0.1:<port>` (or `REDIS_URL`). */
  readonly url: string;
  /** True when `startRedis` started the server (stop() then stops it); false for `REDIS_URL`. */
  readonly owned: boolean;
  /** The server's process id, when it was started here. */
  readonly pid: number | undefined;
  /** A new client of the server; `stop()` disconnects it. */
  client(options?: RedisOptions): Redis;
  /** Disconnects every client from `client()` and, when it started the server, stops it (by its pid) and waits for it to exit. */
  stop(): Promise<void>;
}

export interface StartRedisOptions {
  /** Use this server instead of starting one (default: `process.env.REDIS_URL`; `null` always starts one). */
  readonly url?: string | null;
  /** The `redis-server` binary (default: `redis-server`, looked up on PATH). */
  readonly command?: string;
  /** How long to wait for the started server to answer PING (default 10 000 ms). */
  readonly startTimeoutMs?: number;
}

/** `redis-server` could not be started: not on PATH, or it exited or did not answer in time. */
export class RedisServerError extends Error {
  override readonly name = 'RedisServerError';
  readonly code: 'RS_REDIS_SERVER_NOT_FOUND' | 'RS_REDIS_SERVER_FAILED';

  constructor(code: RedisServerError['code'], message: string, options?: ErrorOptions) {
    super(message, options);
    this.code = code;
  }
}

/**
 * A Redis for a test run. With `REDIS_URL` set (or `options.url`), that server: `stop()` then only
 * disconnects the clients it made, and tests must keep to keys of their own (`projectionTest` does).
 * Otherwise a throwaway `redis-server` from PATH on a free port of 127.0.0.1 with no persistence
 * (`--save '' --appendonly no`), stopped by its pid in `stop()`. Rejects with RedisServerError
 * (`RS_REDIS_SERVER_NOT_FOUND`) when `redis-server` is not on PATH.
 *
 * ```ts
 * const server = await startRedis();
 * const redis = server.client();
 * // ...
 * await server.stop();
 * ```
 */
export async function startRedis(options: StartRedisOptions = {}): Promise<TestRedisServer> {
  const url = options.url === undefined ? process.env['REDIS_URL'] : (options.url ?? undefined);
  if (url) return server(url, undefined);

  const command = options.command ?? 'redis-server';
  const port = await freePort();
  const child = spawn(
    command,
    ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--daemonize', 'no'],
    {
      stdio: ['ignore', 'ignore', 'pipe'],
    },
  );
  let stderr = '';
  child.stderr?.setEncoding('utf8').on('data', (chunk: string) => {
    stderr = (stderr + chunk).slice(-2_000);
  });
  const failure = new Promise<never>((_, reject) => {
    child.once('error', (error: NodeJS.ErrnoException) => {
      reject(
        error.code === 'ENOENT'
          ? new RedisServerError(
              'RS_REDIS_SERVER_NOT_FOUND',
              `'${command}' is not on PATH: install Redis (apt-get install redis-server, brew install redis) or set REDIS_URL to a Redis to test against`,
              { cause: error },
            )
          : new RedisServerError('RS_REDIS_SERVER_FAILED', `'${command}' could not be started: ${error.message}`, {
              cause: error,
            }),
      );
    });
    child.once('exit', (code, signal) => {
      reject(
        new RedisServerError(
          'RS_REDIS_SERVER_FAILED',
          `'${command}' exited (${signal ?? `code ${code}`}) before it answered on port ${port}: ${stderr.trim() || 'no output'}`,
        ),
      );
    });
  });
  failure.catch(() => undefined); // observed below; once ready, a later exit is stop()'s business

  const started = `redis://127.0.0.1:${port}`;
  const deadline = Date.now() + (options.startTimeoutMs ?? 10_000);
  try {
    await Promise.race([failure, waitForPing(started, deadline)]);
  } catch (error) {
    child.kill('SIGKILL');
    throw error;
  }
  return server(started, child);
}

function server(url: string, child: ChildProcess | undefined): TestRedisServer {
  const clients = new Set<Redis>();
  return {
    url,
    owned: child !== undefined,
    pid: child?.pid,
    client(options: RedisOptions = {}) {
      const client = new Redis(url, options);
      clients.add(client);
      return client;
    },
    async stop() {
      await Promise.all([...clients].map(disconnect));
      clients.clear();
      if (!child || child.exitCode !== null || child.signalCode !== null || child.pid === undefined) return;
      const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
      process.kill(child.pid, 'SIGTERM');
      const timedOut = await Promise.race([exited.then(() => false), sleep(5_000).then(() => true)]);
      if (timedOut) {
        process.kill(child.pid, 'SIGKILL');
        await exited;
      }
    },
  };
}

/** Disconnects a client and waits until it has ended. */
function disconnect(client: Redis): Promise<void> {
  if (client.status === 'end') return Promise.resolve();
  return new Promise((resolve) => {
    client.once('end', () => resolve());
    client.disconnect();
  });
}

async function waitForPing(url: string, deadline: number): Promise<void> {
  for (;;) {
    const probe = new Redis(url, {
      lazyConnect: true,
      maxRetriesPerRequest: 0,
      retryStrategy: () => null,
      connectTimeout: 1_000,
    });
    probe.on('error', () => undefined);
    try {
      await probe.connect();
      if ((await probe.ping()) === 'PONG') return;
    } catch (error) {
      if (Date.now() > deadline)
        throw new RedisServerError('RS_REDIS_SERVER_FAILED', `redis-server did not answer PING at ${url} in time`, {
          cause: error,
        });
    } finally {
      probe.disconnect();
    }
    await sleep(50);
  }
}

/** A TCP port nothing listens on (the OS picks it). */
function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const probe = createServer().once('error', reject);
    probe.listen(0, '127.0.0.1', () => {
      const address = probe.address();
      const port = typeof address === 'object' && address ? address.port : 0;
      probe.close(() => resolve(port));
    });
  });
}
