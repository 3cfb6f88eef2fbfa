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
const CONNECTION_FAILURE =
  /^(Connection is closed|Stream isn't writeable|Reached the max retries per request limit|connect E[A-Z]+|read E[A-Z]+|write E[A-Z]+|getaddrinfo|All sentinels are unreachable|Failed to refresh slots cache|None of startup nodes is available|Cluster isn't ready|Cluster is disconnect|Node is disconnected)/;
/**
 * ioredis Cluster gave up following a command: it is retried only on MOVED, ASK, TRYAGAIN,
 * CLUSTERDOWN and a closed connection (a master gone, a failover under way), and the last of those is
 * named after the prefix: `Too many Cluster redirections. Last error: Error: Connection is closed.`
 */
const TOO_MANY_REDIRECTIONS = /^Too many Cluster redirections\. Last error: (?:[A-Za-z]*Error: )?(.*)$/s;
/** A command or script over keys of several slots or nodes: a bug in the caller, never Redis's state. */
const CROSS_SLOT = /CROSSSLOT|non local key|should belong to the same slot|do not hash to the same slot/;
const CONNECTION_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'EPIPE',
  'ETIMEDOUT',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'ENOTFOUND',
  'EAI_AGAIN',
  'ERR_SSL_PROTOCOL_ERROR',
]);

/**
 * Why Redis cannot take the command now, or undefined when the error is anything else (a bug, bad
 * input, WRONGTYPE: those are the caller's to handle).
 */
export function redisUnavailableKind(error: unknown): RedisUnavailableKind | undefined {
  if (!(error instanceof Error)) return undefined;
  if (CROSS_SLOT.test(error.message)) return undefined;
  const kind = kindOfMessage(error.message);
  if (kind !== undefined) {
    // "Failed to refresh slots cache." (ioredis Cluster: no node gave the slots): the last node's own
    // error says why, and a refused login or permission is not a connection problem.
    const last = (error as { lastNodeError?: unknown }).lastNodeError;
    const lastKind =
      kind === 'CONNECTION' && last instanceof Error && !CROSS_SLOT.test(last.message)
        ? kindOfMessage(last.message)
        : undefined;
    return lastKind ?? kind;
  }
  const code = (error as { code?: unknown }).code;
  if (typeof code === 'string' && CONNECTION_CODES.has(code)) return 'CONNECTION';
  if (error.name === 'MaxRetriesPerRequestError') return 'CONNECTION';
  return undefined;
}

function kindOfMessage(message: string): RedisUnavailableKind | undefined {
  const prefix = /^([A-Z]+)\b/.exec(message)?.[1];
  if (prefix !== undefined && Object.hasOwn(UNAVAILABLE_REPLIES, prefix))
    return prefix as keyof typeof UNAVAILABLE_REPLIES;
  const redirected = TOO_MANY_REDIRECTIONS.exec(message);
  // The last reply says what the cluster was doing (TRYAGAIN while a slot moves, CLUSTERDOWN); a
  // closed connection or MOVED/ASK going round: a node is gone or the slots are changing.
  if (redirected) return kindOfMessage(redirected[1] as string) ?? 'CONNECTION';
  return CONNECTION_FAILURE.test(message) ? 'CONNECTION' : undefined;
}

/** True when the error is Redis being unable to serve (see redisUnavailableKind): wait and retry. */
export function isRedisUnavailable(error: unknown): boolean {
  return redisUnavailableKind(error) !== undefined;
}

/** One line for an operator: what Redis is doing, without any argument of the failed command. */
export function describeRedisUnavailable(kind: RedisUnavailableKind): string {
  return kind === 'CONNECTION'
    ? 'Redis is not reachable (connection refused, closed or timed out)'
    : UNAVAILABLE_REPLIES[kind];
}
