/**
 * Telling Redis's own trouble apart from a fault of the data: a write Redis refuses (out of memory,
 * a read-only replica after a failover, a failed disk, a busy script, loading, a flushed script
 * cache, a refused login) or a connection that is gone says nothing about the entry being written,
 * so callers wait and retry instead of blaming it.
 */

/** Reply prefixes of errors that are Redis's state, not the command's arguments. */
const UNAVAILABLE_REPLIES = {
  OOM: 'Redis is out of memory (maxmemory reached, no eviction)',
  READONLY: 'Redis is a read-only replica (a failover is under way or REDIS_URL names a replica)',
  MISCONF: 'Redis refuses writes after a failed save (stop-writes-on-bgsave-error)',
  BUSY: 'Redis is busy running a script',
  LOADING: 'Redis is loading its dataset',
  NOSCRIPT: 'Redis lost its script cache (SCRIPT FLUSH or a restart)',
  MASTERDOWN: 'the replica lost its master',
  CLUSTERDOWN: 'the cluster is down',
  TRYAGAIN: 'the cluster is moving a slot',
  NOREPLICAS: 'not enough replicas acknowledge writes (min-replicas-to-write)',
  WRONGPASS: 'Redis refused the login (wrong user name or password, or the ACL user is disabled)',
  NOAUTH: 'Redis requires a password (put it in REDIS_URL)',
  NOPERM: 'the ACL user lacks a permission this command needs',
  // A blocked XREADGROUP is cut off this way when its node turns into a replica (Redis 6.2+).
  UNBLOCKED: 'Redis turned into a replica or changed state while the command was blocked',
} as const;

export type RedisUnavailableKind = keyof typeof UNAVAILABLE_REPLIES | 'CONNECTION';

/** Node and ioredis errors that mean the connection is gone or never came up. */
const CONNECTION_FAILURE = /^(Connection is closed|Stream isn't writeable|Reached the max retries per request limit|connect E[A-Z]+|read E[A-Z]+|write E[A-Z]+|getaddrinfo|All sentinels are unreachable|Failed to refresh slots cache|None of startup nodes is available)/;
const CONNECTION_CODES = new Set(['ECONNREFUSED', 'ECONNRESET', 'EPIPE', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENETUNREACH', 'ENOTFOUND', 'EAI_AGAIN', 'ERR_SSL_PROTOCOL_ERROR']);

/**
 * Why Redis cannot take the command now, or undefined when the error is anything else (a bug, bad
 * input, WRONGTYPE: those are the caller's to handle).
 */
export function redisUnavailableKind(error: unknown): RedisUnavailableKind | undefined {
  if (!(error instanceof Error)) return undefined;
  const prefix = /^([A-Z]+)\b/.exec(error.message)?.[1];
  if (prefix !== undefined && Object.hasOwn(UNAVAILABLE_REPLIES, prefix)) return prefix as keyof typeof UNAVAILABLE_REPLIES;
  const code = (error as { code?: unknown }).code;
  if (typeof code === 'string' && CONNECTION_CODES.has(code)) return 'CONNECTION';
  if (error.name === 'MaxRetriesPerRequestError' || CONNECTION_FAILURE.test(error.message)) return 'CONNECTION';
  return undefined;
}

/** True when the error is Redis being unable to serve (see redisUnavailableKind): wait and retry. */
export function isRedisUnavailable(error: unknown): boolean {
  return redisUnavailableKind(error) !== undefined;
}

/** One line for an operator: what Redis is doing, without any argument of the failed command. */
export function describeRedisUnavailable(kind: RedisUnavailableKind): string {
  return kind === 'CONNECTION' ? 'Redis is not reachable (connection refused, closed or timed out)' : UNAVAILABLE_REPLIES[kind];
}
