import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import net from 'node:net';
import { resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { Redis } from 'ioredis';
import type { AppConfig } from '../config.ts';
import type { Logger } from '@redsource/processor';

/** No Redis could be found or started. */
export class RedisUnavailableError extends Error {
  readonly code = 'RS_REDIS_UNAVAILABLE';
  constructor(detail: string) {
    super(
      `No Redis available (${detail}). Either set REDIS_URL=redis://host:port to point at one, ` +
        'start one on 127.0.0.1:6379, or install redis-server so redsource can start one itself ' +
        '(Debian/Ubuntu: apt install redis-server; macOS: brew install redis).',
    );
    this.name = 'RedisUnavailableError';
  }
}

export interface RedisTarget {
  readonly url: string;
  /** How it was chosen, for the start-up log. */
  readonly source: 'REDIS_URL' | 'local' | 'embedded';
  /** Stops the embedded redis-server, if this process started one. */
  readonly stop: () => Promise<void>;
}

const LOCAL_URL = 'redis://127.0.0.1:6379';

/** REDIS_URL; else a Redis answering on 127.0.0.1:6379; else an embedded redis-server from PATH (AOF on). */
export async function resolveRedis(config: AppConfig, logger: Logger): Promise<RedisTarget> {
  const noop = async () => undefined;
  if (config.REDIS_URL) return { url: config.REDIS_URL, source: 'REDIS_URL', stop: noop };
  if (await answersPing(LOCAL_URL)) return { url: LOCAL_URL, source: 'local', stop: noop };
  const found = spawnSync('redis-server', ['--version'], { encoding: 'utf8' });
  if (found.error || found.status !== 0) throw new RedisUnavailableError('REDIS_URL is not set, nothing answers on 127.0.0.1:6379 and redis-server is not on PATH');
  return startEmbedded(resolve(config.REDSOURCE_DATA_DIR), logger);
}

async function startEmbedded(dir: string, logger: Logger): Promise<RedisTarget> {
  mkdirSync(dir, { recursive: true });
  const port = (await portIsFree(6379)) ? 6379 : await freePort();
  const child: ChildProcess = spawn(
    'redis-server',
    ['--port', String(port), '--bind', '127.0.0.1', '--dir', dir, '--appendonly', 'yes', '--save', '', '--daemonize', 'no'],
    { stdio: 'ignore' },
  );
  const url = `redis://127.0.0.1:${port}`;
  for (let i = 0; i < 100 && child.exitCode === null; i++) {
    if (await answersPing(url)) {
      logger.info({ url, dir }, 'started an embedded redis-server (AOF on)');
      const stop = async () => {
        if (child.exitCode !== null) return;
        const exited = new Promise((r) => child.once('exit', r));
        child.kill('SIGTERM');
        await Promise.race([exited, sleep(5_000)]);
      };
      process.once('exit', () => child.kill('SIGKILL'));
      return { url, source: 'embedded', stop };
    }
    await sleep(50);
  }
  child.kill('SIGKILL');
  throw new RedisUnavailableError(`the embedded redis-server on port ${port} did not start`);
}

async function answersPing(url: string): Promise<boolean> {
  const probe = new Redis(url, { lazyConnect: true, connectTimeout: 500, maxRetriesPerRequest: 0, retryStrategy: () => null });
  probe.on('error', () => undefined);
  try {
    await probe.connect();
    return (await probe.ping()) === 'PONG';
  } catch {
    return false;
  } finally {
    probe.disconnect();
  }
}

function portIsFree(port: number): Promise<boolean> {
  return new Promise((done) => {
    const server = net.createServer();
    server.once('error', () => done(false));
    server.listen(port, '127.0.0.1', () => server.close(() => done(true)));
  });
}

function freePort(): Promise<number> {
  return new Promise((done, fail) => {
    const server = net.createServer();
    server.once('error', fail);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => done(typeof address === 'object' && address ? address.port : 0));
    });
  });
}

/** A client that keeps reconnecting with capped backoff while Redis is away. */
export function connectRedis(url: string, name: string): Redis {
  const client = new Redis(url, {
    connectionName: name,
    retryStrategy: (times) => Math.min(50 * 2 ** times, 2_000),
    maxRetriesPerRequest: 3,
    // Commands whose reply was lost with a dropped connection are sent again on reconnect (the
    // default). Everything the processor sends is safe to repeat (the apply script skips what it
    // applied), and the app appends only events with ids, which the append script dedupes. Turning
    // this off makes ioredis drop such commands without ever settling their promises (seen under
    // CLIENT KILL in test/faults): the loop would hang.
    autoResendUnfulfilledCommands: true,
  });
  return client;
}
