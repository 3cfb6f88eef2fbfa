import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdirSync, readFileSync } from 'node:fs';
import net from 'node:net';
import { resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { ConnectionOptions } from 'node:tls';
import { Redis } from 'ioredis';
import { redisUnavailableKind, type RedisUnavailableKind } from '@redsource/event-store';
import { ConfigError, type AppConfig } from '../config.ts';
import { redactUrl } from './redact.ts';
import type { Logger } from '@redsource/processor';

export { redactUrl };

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
  /** The embedded redis-server's data directory. */
  readonly dataDir?: string;
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
  if (found.error || found.status !== 0)
    throw new RedisUnavailableError(
      'REDIS_URL is not set, nothing answers on 127.0.0.1:6379 and redis-server is not on PATH',
    );
  return startEmbedded(resolve(config.REDSOURCE_DATA_DIR), logger);
}

async function startEmbedded(dir: string, logger: Logger): Promise<RedisTarget> {
  mkdirSync(dir, { recursive: true });
  const port = (await portIsFree(6379)) ? 6379 : await freePort();
  const child: ChildProcess = spawn(
    'redis-server',
    [
      '--port',
      String(port),
      '--bind',
      '127.0.0.1',
      '--dir',
      dir,
      '--appendonly',
      'yes',
      '--save',
      '',
      '--daemonize',
      'no',
    ],
    { stdio: 'ignore' },
  );
  const url = `redis://127.0.0.1:${port}`;
  for (let i = 0; i < 100 && child.exitCode === null; i++) {
    if (await answersPing(url)) {
      logger.debug({ port, dir }, 'started an embedded redis-server (AOF on)');
      const stop = async () => {
        if (child.exitCode !== null) return;
        const exited = new Promise((r) => child.once('exit', r));
        child.kill('SIGTERM');
        await Promise.race([exited, sleep(5_000)]);
      };
      process.once('exit', () => child.kill('SIGKILL'));
      return { url, source: 'embedded', dataDir: dir, stop };
    }
    await sleep(50);
  }
  child.kill('SIGKILL');
  throw new RedisUnavailableError(`the embedded redis-server on port ${port} did not start`);
}

async function answersPing(url: string): Promise<boolean> {
  const probe = new Redis(url, {
    lazyConnect: true,
    connectTimeout: 500,
    maxRetriesPerRequest: 0,
    retryStrategy: () => null,
  });
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

/** Why Redis cannot serve, for the error or any error it wraps (its `cause` chain); undefined for anything else. */
export function unavailableKindOf(error: unknown): RedisUnavailableKind | undefined {
  for (let e = error, depth = 0; e instanceof Error && depth < 5; e = e.cause, depth++) {
    const kind = redisUnavailableKind(e);
    if (kind) return kind;
  }
  return undefined;
}

/** TLS settings for a `rediss://` URL, from REDIS_TLS_CA and REDIS_TLS_INSECURE. */
export interface RedisTls {
  /** PEM of the CA that signed the server's certificate; absent = the system's CAs. */
  readonly ca?: string;
  /** Skip certificate verification (self-signed development setups). */
  readonly insecure: boolean;
}

export function redisTls(config: Pick<AppConfig, 'REDIS_TLS_CA' | 'REDIS_TLS_INSECURE'>): RedisTls {
  if (!config.REDIS_TLS_CA) return { insecure: config.REDIS_TLS_INSECURE };
  try {
    return { ca: readFileSync(config.REDIS_TLS_CA, 'utf8'), insecure: config.REDIS_TLS_INSECURE };
  } catch (error) {
    throw new ConfigError(`REDIS_TLS_CA: cannot read ${config.REDIS_TLS_CA} (${(error as Error).message})`);
  }
}

/**
 * ioredis options for the URL: for `rediss://`, TLS with the CA and verification settings (ioredis
 * turns TLS on for rediss:// by itself; this adds what it cannot know); for `redis://`, none. User
 * and password come from the URL (ACL: redis://user:password@host:port).
 */
export function tlsOptions(url: string, tls: RedisTls | undefined): { tls?: ConnectionOptions } {
  if (!/^rediss:\/\//i.test(url)) return {};
  return { tls: { ...(tls?.ca ? { ca: tls.ca } : {}), ...(tls?.insecure ? { rejectUnauthorized: false } : {}) } };
}

export interface ConnectOptions {
  /**
   * A one-shot command (`status`, `seed`...): a command fails after two reconnect attempts and a
   * connection attempt after 1.5 s, so an unreachable Redis is reported within a few seconds. A
   * service keeps retrying its loops itself, and its reads are bounded per request (http/redis-bound.ts).
   */
  readonly oneShot?: boolean;
}

/** A client that keeps reconnecting with capped backoff while Redis is away. */
export function connectRedis(url: string, name: string, tls?: RedisTls, options: ConnectOptions = {}): Redis {
  const client = new Redis(url, {
    ...tlsOptions(url, tls),
    connectionName: name,
    retryStrategy: (times) => Math.min(50 * 2 ** times, 2_000),
    maxRetriesPerRequest: options.oneShot ? 2 : 3,
    connectTimeout: options.oneShot ? 1_500 : 5_000,
    // Commands whose reply was lost with a dropped connection are sent again on reconnect (the
    // default). Everything the processor sends is safe to repeat (the apply script skips what it
    // applied), and the app appends only events with ids, which the append script dedupes. Turning
    // this off makes ioredis drop such commands without ever settling their promises (seen under
    // CLIENT KILL in test/faults): the loop would hang.
    autoResendUnfulfilledCommands: true,
  });
  return client;
}
