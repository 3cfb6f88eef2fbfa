import type { Redis } from 'ioredis';
import { describeRedisUnavailable, type RedisUnavailableKind } from '@redsource/event-store';
import type { Logger } from '@redsource/processor';
import type { RedisTarget } from './redis.ts';
import { unavailableKindOf } from './redis.ts';

/** Where a Redis URL points, without its password: what every log line and failure message names. */
export interface RedisEndpoint {
  /** `host:port` (IPv6 in brackets). */
  readonly address: string;
  readonly tls: boolean;
  /** The ACL user logging in (`default` when the URL names none). */
  readonly user: string;
  readonly db: number;
}

/** Where REDIS_URL points (the first node of a cluster's seed list). */
export function redisEndpoint(url: string): RedisEndpoint {
  const parsed = new URL(url.split(',')[0] ?? url);
  let user = 'default';
  try {
    user = decodeURIComponent(parsed.username) || 'default';
  } catch {
    user = parsed.username;
  }
  return {
    address: `${parsed.hostname || '127.0.0.1'}:${parsed.port || '6379'}`,
    tls: parsed.protocol.toLowerCase() === 'rediss:',
    user,
    db: Number(parsed.pathname.slice(1) || 0),
  };
}

const SOURCES: Record<RedisTarget['source'], string> = {
  REDIS_URL: 'from REDIS_URL',
  local: 'REDIS_URL not set: the one answering on 127.0.0.1:6379',
  embedded: 'REDIS_URL not set and nothing on 127.0.0.1:6379: an embedded redis-server this process started',
};

/** The one start-up line naming the Redis this process uses: address, TLS or not, where it came from; never the password. */
export function logRedisTarget(logger: Logger, target: RedisTarget): void {
  const at = redisEndpoint(target.url);
  const data = target.dataDir ? `, data in ${target.dataDir} (AOF on)` : '';
  logger.info(
    { redis: { address: at.address, tls: at.tls, user: at.user, db: at.db, source: target.source, ...(target.dataDir ? { dataDir: target.dataDir } : {}) } },
    `using Redis at ${at.address} (${at.tls ? 'TLS' : 'no TLS'}, user ${at.user}; ${SOURCES[target.source]}${data})`,
  );
}

/** A Redis failure as one line for an operator: which Redis, what failed, what to check. */
export class RedisFailureError extends Error {
  readonly code = 'RS_REDIS_UNAVAILABLE';
  constructor(
    message: string,
    readonly kind: RedisUnavailableKind,
    /** The error it explains (not `cause`: its message would be added to the line again). */
    readonly original: unknown,
  ) {
    super(message);
    this.name = 'RedisFailureError';
  }
}

/** What `kind` means for the Redis at `at`, and what to check; `detail` is the connection's own error, if known. */
export function explainKind(kind: RedisUnavailableKind, at: RedisEndpoint, detail: string | undefined): string {
  switch (kind) {
    case 'CONNECTION':
      return `Redis at ${at.address} is not reachable: ${detail ?? 'no answer'}: check REDIS_URL / that Redis runs${at.tls ? ' and speaks TLS' : ''}`;
    case 'WRONGPASS':
      return `Redis at ${at.address} refused the login for user ${at.user}: check the user and password in REDIS_URL`;
    case 'NOAUTH':
      return `Redis at ${at.address} requires a password: put the user and password in REDIS_URL (redis://user:password@host:port)`;
    case 'NOPERM':
      return `Redis at ${at.address} refused a command to user ${at.user} (missing ACL permission): see the README's Security section for the rules the user needs`;
    default:
      return `Redis at ${at.address}: ${describeRedisUnavailable(kind)}`;
  }
}

/**
 * Follows one connection's state for the log. A service (`serve`, `api`, `process`) says once that
 * Redis is away and why (and again only if the reason changes), keeps retrying, and says when it is
 * back; a one-shot command logs nothing here (its failure is its one line). Either can `explain` an error.
 */
export class RedisWatch {
  readonly endpoint: RedisEndpoint;
  /** The connection's last own error (`connect ECONNREFUSED …`, `WRONGPASS …`), for the failure line. */
  private lastError: Error | undefined;
  private downSince: number | undefined;
  private reported: string | undefined;

  constructor(
    private readonly redis: Redis,
    target: RedisTarget,
    private readonly logger: Logger,
    private readonly service: boolean,
  ) {
    this.endpoint = redisEndpoint(target.url);
    redis.on('error', this.onError);
    redis.on('ready', this.onReady);
  }

  /** The error as one RedisFailureError line when it is Redis's state, else the error itself. */
  explain(error: unknown): unknown {
    if (error instanceof RedisFailureError) return error;
    const kind = unavailableKindOf(error) ?? (this.redis.status === 'ready' ? undefined : unavailableKindOf(this.lastError));
    if (!kind) return error;
    // A command that gave up on a connection that never came up: the connection's error says why.
    const own = kind === 'CONNECTION' ? unavailableKindOf(this.lastError) : undefined;
    const effective = own && own !== 'CONNECTION' ? own : kind;
    return new RedisFailureError(explainKind(effective, this.endpoint, detailOf(this.lastError ?? error)), effective, error);
  }

  /** Why the connection is not ready, as one line naming the kind (`WRONGPASS: …`) and no credential; undefined while it is ready. */
  downReason(): string | undefined {
    if (this.redis.status === 'ready') return undefined;
    const kind = unavailableKindOf(this.lastError) ?? 'CONNECTION';
    return `${kind}: ${explainKind(kind, this.endpoint, this.lastError && detailOf(this.lastError))}`;
  }

  /** Stops following the connection (its late errors, of a closing connection, are dropped). */
  dispose(): void {
    this.redis.off('error', this.onError);
    this.redis.off('ready', this.onReady);
    this.redis.on('error', () => undefined);
  }

  private readonly onError = (error: Error) => {
    this.lastError = error;
    this.downSince ??= Date.now();
    const kind = unavailableKindOf(error);
    const line = kind ? explainKind(kind, this.endpoint, detailOf(error)) : `Redis at ${this.endpoint.address}: ${error.message}`;
    // The same outage reported once; ECONNREFUSED and ECONNRESET are one reason, a refused login another.
    const reason = kind ?? error.message;
    if (!this.service || reason === this.reported) {
      this.logger.debug({ err: error.message }, 'redis connection error');
      return;
    }
    this.reported = reason;
    this.logger.warn({ redis: this.endpoint.address, err: error.message }, `${line}; retrying until it answers`);
  };

  private readonly onReady = () => {
    if (this.downSince === undefined) return;
    const seconds = ((Date.now() - this.downSince) / 1000).toFixed(1);
    if (this.service && this.reported !== undefined) this.logger.info({ redis: this.endpoint.address, downSeconds: Number(seconds) }, `Redis at ${this.endpoint.address} is back after ${seconds} s`);
    this.downSince = undefined;
    this.reported = undefined;
    this.lastError = undefined;
  };
}

/** What a command's own error says about the connection; nothing for ioredis' retry count, which names no cause. */
function detailOf(error: unknown): string {
  const message = error instanceof Error ? error.message : String(error);
  return /^Reached the max retries per request limit/.test(message) ? 'no answer (connection timed out)' : message;
}
