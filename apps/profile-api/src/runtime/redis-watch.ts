import type { Redis } from 'ioredis';
import { describeRedisUnavailable, type RedisUnavailableKind } from '@redsource/event-store';
import type { Logger } from '@redsource/processor';
import type { RedisTarget } from './redis.ts';
// A cycle (redis-connection.ts uses this module's errors): both only call each other's functions at run time.
import { clusterErrorKind } from './redis-connection.ts';

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
  const parsed = new URL(seedList(url)[0] ?? url);
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

/**
 * The entries of a comma-separated seed list (a Redis Cluster's nodes) as URLs: a bare `host:port`
 * takes the first entry's scheme (its credentials are not needed to name it). One URL: itself.
 */
function seedList(url: string): string[] {
  const entries = url
    .split(',')
    .map((e) => e.trim())
    .filter((e) => e.length > 0);
  const scheme = /^(rediss?):\/\//i.exec(entries[0] ?? '')?.[1] ?? 'redis';
  return entries.map((e) => (/^[a-z][a-z0-9+.-]*:\/\//i.test(e) ? e : `${scheme}://${e}`));
}

/** The `host:port` of every node REDIS_URL names (one for a single URL), never a password. */
export function redisSeedAddresses(url: string): string[] {
  return seedList(url).map((entry) => {
    try {
      return redisEndpoint(entry).address;
    } catch {
      return '(not a URL)';
    }
  });
}

/**
 * The one start-up line naming the Redis this process uses: address, TLS or not, where it came from;
 * never the password. Several nodes in REDIS_URL are the seeds of a Redis Cluster: all are named.
 */
export function logRedisTarget(logger: Logger, target: RedisTarget): void {
  const at = redisEndpoint(target.url);
  const data = target.dataDir ? `, data in ${target.dataDir} (AOF on)` : '';
  const seeds = redisSeedAddresses(target.url);
  const cluster = seeds.length > 1;
  logger.info(
    {
      redis: {
        address: at.address,
        ...(cluster ? { cluster: true, seeds } : {}),
        tls: at.tls,
        user: at.user,
        db: at.db,
        source: target.source,
        ...(target.dataDir ? { dataDir: target.dataDir } : {}),
      },
    },
    `using ${cluster ? `a Redis Cluster, seed nodes ${seeds.join(', ')}` : `Redis at ${at.address}`} (${at.tls ? 'TLS' : 'no TLS'}, user ${at.user}; ${SOURCES[target.source]}${data})`,
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
 *
 * A Redis Cluster client reports a node's connection errors as 'node error' (with the node), and
 * emits 'error' only when no node gives it the slots ("Failed to refresh slots cache.", the cause in
 * its `lastNodeError`). While the cluster is not ready, both are the outage above; once it is ready,
 * a node that fails (a master gone, a failover under way) is said once per node and reason, and
 * when that node answers again.
 */
export class RedisWatch {
  readonly endpoint: RedisEndpoint;
  /** The connection's last own error (`connect ECONNREFUSED …`, `WRONGPASS …`), for the failure line. */
  private lastError: Error | undefined;
  /** The cluster node `lastError` came from (`host:port`), when a node reported it. */
  private lastErrorNode: string | undefined;
  private downSince: number | undefined;
  private reported: string | undefined;
  /** Cluster nodes said to fail while the cluster was ready: node → reason, until the node is ready again. */
  private readonly nodesReported = new Map<string, string>();
  private readonly cluster: boolean;
  /** The cluster's node connections followed, with their 'ready' listener. */
  private readonly watchedNodes = new Map<Redis, () => void>();

  constructor(
    private readonly redis: Redis,
    target: RedisTarget,
    private readonly logger: Logger,
    private readonly service: boolean,
  ) {
    this.endpoint = redisEndpoint(target.url);
    this.cluster = (redis as { isCluster?: boolean }).isCluster === true;
    redis.on('error', this.onError);
    redis.on('ready', this.onReady);
    if (this.cluster) {
      redis.on('node error', this.onNodeError);
      redis.on('+node', this.watchNode);
      for (const node of (redis as unknown as { nodes(role: 'all'): Redis[] }).nodes('all')) this.watchNode(node);
    }
  }

  /** The error as one RedisFailureError line when it is Redis's state, else the error itself. */
  explain(error: unknown): unknown {
    if (error instanceof RedisFailureError) return error;
    const kind =
      clusterErrorKind(error) ?? (this.redis.status === 'ready' ? undefined : clusterErrorKind(this.lastError));
    if (!kind) return error;
    // A command that gave up on a connection that never came up: the connection's error says why.
    const own = kind === 'CONNECTION' ? clusterErrorKind(this.lastError) : undefined;
    const effective = own && own !== 'CONNECTION' ? own : kind;
    const at = own !== undefined ? this.endpointOf(this.lastErrorNode) : this.endpoint;
    return new RedisFailureError(explainKind(effective, at, detailOf(this.lastError ?? error)), effective, error);
  }

  /** Why the connection is not ready, as one line naming the kind (`WRONGPASS: …`) and no credential; undefined while it is ready. */
  downReason(): string | undefined {
    if (this.redis.status === 'ready') return undefined;
    const kind = clusterErrorKind(this.lastError) ?? 'CONNECTION';
    return `${kind}: ${explainKind(kind, this.endpointOf(this.lastErrorNode), this.lastError && detailOf(this.lastError))}`;
  }

  /** Stops following the connection (its late errors, of a closing connection, are dropped). */
  dispose(): void {
    this.redis.off('error', this.onError);
    this.redis.off('ready', this.onReady);
    this.redis.off('node error', this.onNodeError);
    this.redis.off('+node', this.watchNode);
    for (const [node, onReady] of this.watchedNodes) node.off('ready', onReady);
    this.watchedNodes.clear();
    this.redis.on('error', () => undefined);
    if (this.cluster) this.redis.on('node error', () => undefined);
  }

  /** The endpoint of a cluster node (its address, the user and TLS of REDIS_URL), or REDIS_URL's. */
  private endpointOf(node: string | undefined): RedisEndpoint {
    return node === undefined ? this.endpoint : { ...this.endpoint, address: node };
  }

  private readonly onError = (error: Error) => this.failed(error, undefined);

  private readonly onNodeError = (error: Error, node: string) => {
    // The whole cluster is not there (yet): the node's error is the outage's reason.
    if (this.redis.status !== 'ready') return this.failed(error, node);
    const kind = clusterErrorKind(error);
    const reason = kind ?? error.message;
    if (!this.service || this.nodesReported.get(node) === reason) {
      this.logger.debug({ redis: node, err: error.message }, 'redis cluster node error');
      return;
    }
    this.nodesReported.set(node, reason);
    const at = this.endpointOf(node);
    const line = kind ? explainKind(kind, at, detailOf(error)) : `Redis at ${at.address}: ${error.message}`;
    this.logger.warn(
      { redis: node, cluster: true, err: error.message },
      `Redis Cluster node: ${line}; the cluster client retries and follows a failover`,
    );
  };

  private failed(error: Error, node: string | undefined): void {
    this.lastError = error;
    this.lastErrorNode = node;
    this.downSince ??= Date.now();
    const kind = clusterErrorKind(error);
    const at = this.endpointOf(node);
    const line = kind ? explainKind(kind, at, detailOf(error)) : `Redis at ${at.address}: ${error.message}`;
    // The same outage reported once; ECONNREFUSED and ECONNRESET are one reason, a refused login another.
    const reason = kind ?? error.message;
    if (!this.service || reason === this.reported) {
      this.logger.debug(
        { err: error.message, ...(node === undefined ? {} : { redis: node }) },
        'redis connection error',
      );
      return;
    }
    this.reported = reason;
    this.logger.warn({ redis: at.address, err: error.message }, `${line}; retrying until it answers`);
  }

  private readonly onReady = () => {
    if (this.downSince === undefined) return;
    const seconds = ((Date.now() - this.downSince) / 1000).toFixed(1);
    const what = this.cluster
      ? `the Redis Cluster (seed ${this.endpoint.address})`
      : `Redis at ${this.endpoint.address}`;
    if (this.service && this.reported !== undefined)
      this.logger.info(
        { redis: this.endpoint.address, downSeconds: Number(seconds) },
        `${what} is back after ${seconds} s`,
      );
    this.downSince = undefined;
    this.reported = undefined;
    this.lastError = undefined;
    this.lastErrorNode = undefined;
  };

  /** Follows a cluster node's connection, to say when a node said to fail answers again. */
  private readonly watchNode = (node: Redis) => {
    if (this.watchedNodes.has(node)) return;
    const key = `${node.options.host ?? '?'}:${node.options.port ?? '?'}`;
    const onReady = () => this.nodeBack(key);
    this.watchedNodes.set(node, onReady);
    node.on('ready', onReady);
    node.once('end', () => {
      node.off('ready', onReady);
      this.watchedNodes.delete(node);
    });
  };

  private nodeBack(node: string): void {
    if (!this.nodesReported.delete(node)) return;
    if (this.service) this.logger.info({ redis: node, cluster: true }, `Redis Cluster node ${node} answers again`);
  }
}

/** What a command's own error says about the connection; nothing for ioredis' retry count, which names no cause. */
function detailOf(error: unknown): string {
  const message = error instanceof Error ? error.message : String(error);
  return /^Reached the max retries per request limit/.test(message) ? 'no answer (connection timed out)' : message;
}
