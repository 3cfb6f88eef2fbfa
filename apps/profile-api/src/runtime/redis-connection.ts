import { Cluster, Redis, type ClusterOptions } from 'ioredis';
import { ConfigError } from '../config.ts';
import { connectRedis, tlsOptions, unavailableKindOf, type ConnectOptions, type RedisTls } from './redis.ts';
import { redactUrl } from './redact.ts';
import { explainKind, RedisFailureError, redisEndpoint, type RedisEndpoint } from './redis-watch.ts';

/**
 * One way in to Redis whatever it is: a standalone server or a Redis Cluster. `REDIS_URL` names one
 * node (`redis://[user:password@]host:port[/db]`) or several seed nodes of a cluster, comma-separated
 * (`redis://a:7000,redis://b:7001`, or `redis://user:pw@a:7000,b:7001,c:7002`: a bare `host:port`
 * takes the scheme, user, password and db of the first entry). The server says which it is
 * (`INFO cluster` → `cluster_enabled:1`), and the client fits: an ioredis `Cluster` (masters only,
 * following MOVED/ASK, retrying through failovers) or the usual `Redis`.
 *
 * open-redis.ts opens every process's connection with it.
 */

export type RedisMode = 'standalone' | 'cluster';

export interface RedisSeed {
  readonly host: string;
  readonly port: number;
}

/** REDIS_URL taken apart: the nodes, and what they share (scheme, credentials, db). */
export interface RedisSeeds {
  readonly seeds: readonly RedisSeed[];
  readonly tls: boolean;
  readonly username: string | undefined;
  readonly password: string | undefined;
  readonly db: number;
  /** The first node as one URL (credentials and db included): what a standalone connection is given. */
  readonly url: string;
  /** The first node's address, user and TLS, for messages: never the password. */
  readonly endpoint: RedisEndpoint;
}

/** REDIS_URL names several nodes, but they are not a Redis Cluster (or a cluster is asked for a database other than 0). */
export class RedisModeError extends Error {
  readonly code = 'RS_REDIS_MODE';
  constructor(message: string) {
    super(message);
    this.name = 'RedisModeError';
  }
}

const SCHEME = /^(rediss?):\/\//i;

/**
 * Parses REDIS_URL as one URL or a comma-separated list of seed nodes. Throws ConfigError naming
 * REDIS_URL, with any password shown as `***`.
 */
export function parseRedisSeeds(value: string): RedisSeeds {
  const entries = value
    .split(',')
    .map((e) => e.trim())
    .filter((e) => e.length > 0);
  if (entries.length === 0) throw new ConfigError('REDIS_URL: no Redis node given');
  const firstEntry = entries[0] as string;
  const firstUrl = SCHEME.test(firstEntry) ? firstEntry : `redis://${firstEntry}`;
  const first = parseEntry(firstUrl, value);
  const seeds: RedisSeed[] = [];
  for (const entry of entries) {
    if (!SCHEME.test(entry)) {
      if (/^[a-z][a-z0-9+.-]*:\/\//i.test(entry))
        throw new ConfigError(`REDIS_URL: '${redactUrl(entry)}' must start with redis:// or rediss://`);
      // host:port (or [v6]:port, or a host alone): shares everything else with the first entry.
      if (entry.includes('@') || entry.includes('/')) {
        throw new ConfigError(
          `REDIS_URL: '${redactUrl(entry)}' is neither a URL nor host:port (credentials and db go in a full redis:// URL)`,
        );
      }
      seeds.push(parseEntry(`${first.scheme}://${entry}`, value).seed);
      continue;
    }
    const parsed = parseEntry(entry, value);
    if (
      parsed.scheme !== first.scheme ||
      parsed.username !== first.username ||
      parsed.password !== first.password ||
      parsed.db !== first.db
    ) {
      throw new ConfigError(
        `REDIS_URL: every node of the list must use the same scheme, user, password and db as the first (${redactUrl(firstUrl)}); '${redactUrl(entry)}' does not`,
      );
    }
    seeds.push(parsed.seed);
  }
  const unique = seeds.filter((s, i) => seeds.findIndex((o) => o.host === s.host && o.port === s.port) === i);
  return {
    seeds: unique,
    tls: first.scheme === 'rediss',
    username: first.username,
    password: first.password,
    db: first.db,
    url: firstUrl,
    endpoint: redisEndpoint(firstUrl),
  };
}

interface ParsedEntry {
  readonly scheme: 'redis' | 'rediss';
  readonly username: string | undefined;
  readonly password: string | undefined;
  readonly db: number;
  readonly seed: RedisSeed;
}

function parseEntry(entry: string, whole: string): ParsedEntry {
  let url: URL;
  try {
    url = new URL(entry);
  } catch {
    throw new ConfigError(
      `REDIS_URL: '${redactUrl(entry)}' is not a URL like redis://[user:password@]host:port[/db]${whole.includes(',') ? ' (in the comma-separated list)' : ''}`,
    );
  }
  const decode = (part: string) => {
    try {
      return decodeURIComponent(part);
    } catch {
      throw new ConfigError(
        `REDIS_URL: the user or password of '${redactUrl(entry)}' holds a '%' that is not a percent-encoding like %40 (write a literal % as %25)`,
      );
    }
  };
  const dbText = url.pathname.replace(/^\//, '');
  if (dbText !== '' && !/^\d+$/.test(dbText))
    throw new ConfigError(`REDIS_URL: '${redactUrl(entry)}': the path must be a database number`);
  const port = url.port === '' ? 6379 : Number(url.port);
  return {
    scheme: url.protocol.toLowerCase() === 'rediss:' ? 'rediss' : 'redis',
    username: url.username === '' ? undefined : decode(url.username),
    password: url.password === '' ? undefined : decode(url.password),
    db: dbText === '' ? 0 : Number(dbText),
    seed: { host: url.hostname.replace(/^\[(.*)\]$/, '$1') || '127.0.0.1', port },
  };
}

export interface DetectOptions {
  /** How long one node may take to connect and answer (default 1.5 s). */
  readonly timeoutMs?: number;
}

/** What the server said, and which node said it. */
export interface DetectedMode {
  readonly mode: RedisMode;
  /** `host:port` of the node that answered. */
  readonly answeredBy: string;
}

/**
 * Asks the nodes in turn, until one answers, whether it runs in cluster mode: `INFO cluster`
 * (`cluster_enabled:1`), or for an ACL user without INFO, `CLUSTER INFO`. A refused login is the
 * answer for every node (same credentials): thrown at once. No node answering: RedisFailureError
 * (kind CONNECTION) naming the first; never a password.
 */
export async function detectRedisMode(
  seeds: RedisSeeds,
  tls: RedisTls | undefined,
  options: DetectOptions = {},
): Promise<DetectedMode> {
  let firstFailure: { error: unknown; at: RedisEndpoint } | undefined;
  for (const seed of seeds.seeds) {
    const at = seedEndpoint(seeds, seed);
    const probe = new Redis({
      host: seed.host,
      port: seed.port,
      ...(seeds.username === undefined ? {} : { username: seeds.username }),
      ...(seeds.password === undefined ? {} : { password: seeds.password }),
      ...tlsOptions(seeds.url, tls),
      connectionName: 'redsource:probe',
      lazyConnect: true,
      // Its INFO is the question itself (and may be refused to an ACL user): no ready check before it.
      enableReadyCheck: false,
      connectTimeout: options.timeoutMs ?? 1_500,
      commandTimeout: options.timeoutMs ?? 1_500,
      maxRetriesPerRequest: 0,
      retryStrategy: () => null,
      enableOfflineQueue: false,
    });
    let lastError: Error | undefined;
    probe.on('error', (error: Error) => (lastError = error));
    try {
      await probe.connect();
      const mode = await askMode(probe);
      if (mode === 'cluster') await clusterCommandsAllowed(probe, at);
      return { mode, answeredBy: at.address };
    } catch (error) {
      if (error instanceof RedisFailureError) throw error;
      // A refused login or permission is the same on every node: no point asking the others. The
      // connection's own error says so when connect() only reports the connection closing.
      for (const cause of [error, lastError]) {
        const kind = unavailableKindOf(cause);
        if (kind === 'WRONGPASS' || kind === 'NOAUTH' || kind === 'NOPERM')
          throw new RedisFailureError(explainKind(kind, at, messageOf(cause)), kind, bare(cause));
      }
      firstFailure ??= { error: lastError ?? error, at };
    } finally {
      probe.disconnect();
    }
  }
  const failure = firstFailure as { error: unknown; at: RedisEndpoint };
  const kind = unavailableKindOf(failure.error) ?? 'CONNECTION';
  const line = explainKind(kind, failure.at, messageOf(failure.error));
  const all =
    seeds.seeds.length > 1 ? `none of the ${seeds.seeds.length} Redis nodes in REDIS_URL answers; the first: ` : '';
  throw new RedisFailureError(`${all}${line}`, kind, bare(failure.error));
}

async function askMode(probe: Redis): Promise<RedisMode> {
  try {
    const info = await probe.info('cluster');
    return /^cluster_enabled:1\s*$/m.test(info) ? 'cluster' : 'standalone';
  } catch (error) {
    if (unavailableKindOf(error) !== 'NOPERM') throw error;
  }
  // No INFO for this ACL user: CLUSTER INFO answers on a cluster node, and says cluster support is disabled elsewhere.
  try {
    await probe.call('CLUSTER', 'INFO');
    return 'cluster';
  } catch (error) {
    if (/cluster support disabled/i.test(messageOf(error))) return 'standalone';
    throw error;
  }
}

/**
 * A cluster client learns the slots with CLUSTER SLOTS and waits for CLUSTER INFO to say the cluster
 * is ok: an ACL user without them gets only "None of startup nodes is available" from ioredis, with
 * no reason given. Asked here, so the failure names the permission.
 */
async function clusterCommandsAllowed(probe: Redis, at: RedisEndpoint): Promise<void> {
  for (const sub of ['SLOTS', 'INFO']) {
    try {
      await probe.call('CLUSTER', sub);
    } catch (error) {
      if (unavailableKindOf(error) !== 'NOPERM') throw error;
      throw new RedisFailureError(
        `Redis at ${at.address} is a Redis Cluster node, and user ${at.user} may not run CLUSTER ${sub}, which a cluster client needs: ` +
          'add +cluster|slots +cluster|info to its ACL rules',
        'NOPERM',
        bare(error),
      );
    }
  }
}

/** ioredis options of a cluster client; the node connections get `redisOptions` (credentials, TLS, name, timeouts). */
export function clusterOptions(
  seeds: RedisSeeds,
  name: string,
  tls: RedisTls | undefined,
  options: ConnectOptions = {},
): ClusterOptions {
  const oneShot = options.oneShot === true;
  return {
    // Every read and write on masters: a replica may lag, and the scripts write.
    scaleReads: 'master',
    // Commands wait while the client (re)discovers the slots, as `Redis` queues them while reconnecting.
    enableOfflineQueue: true,
    enableReadyCheck: true,
    // No node reachable: try again with capped backoff; a one-shot command gives up after a few tries.
    clusterRetryStrategy: (times) => (oneShot && times > 2 ? null : Math.min(100 * 2 ** times, 2_000)),
    // A node lost (a failover under way): ask again shortly, after the replica took over.
    retryDelayOnFailover: 200,
    retryDelayOnClusterDown: 300,
    retryDelayOnTryAgain: 100,
    retryDelayOnMoved: 0,
    maxRedirections: 16,
    slotsRefreshTimeout: oneShot ? 1_500 : 2_000,
    slotsRefreshInterval: 5_000,
    // With TLS the certificate names the host as given: connect to the names, not resolved addresses.
    ...(seeds.tls
      ? { dnsLookup: (address: string, callback: (error: null, address: string) => void) => callback(null, address) }
      : {}),
    redisOptions: {
      ...tlsOptions(seeds.url, tls),
      ...(seeds.username === undefined ? {} : { username: seeds.username }),
      ...(seeds.password === undefined ? {} : { password: seeds.password }),
      connectionName: name,
      connectTimeout: oneShot ? 1_500 : 5_000,
      maxRetriesPerRequest: oneShot ? 2 : 3,
      autoResendUnfulfilledCommands: true,
    },
  };
}

/** A Redis Cluster client for the seed nodes (see clusterOptions); REDIS_URL's db must be 0, the only one a cluster has. */
export function connectCluster(seeds: RedisSeeds, name: string, tls?: RedisTls, options: ConnectOptions = {}): Cluster {
  if (seeds.db !== 0) {
    throw new RedisModeError(
      `Redis at ${seeds.endpoint.address} is a Redis Cluster node, and a cluster has only database 0: remove /${seeds.db} from REDIS_URL`,
    );
  }
  return new Cluster(
    seeds.seeds.map(({ host, port }) => ({ host, port })),
    clusterOptions(seeds, name, tls, options),
  );
}

export type RedisConnection =
  | {
      readonly mode: 'standalone';
      readonly client: Redis;
      readonly seeds: RedisSeeds;
      readonly answeredBy: string | undefined;
    }
  | {
      readonly mode: 'cluster';
      readonly client: Cluster;
      readonly seeds: RedisSeeds;
      readonly answeredBy: string | undefined;
    };

export interface OpenConnectionOptions extends ConnectOptions, DetectOptions {
  /**
   * No node answers the question: `throw` (default, RedisFailureError), or `guess` (a service that
   * starts before Redis): a list of nodes is a cluster, one node a standalone Redis.
   */
  readonly whenUnreachable?: 'throw' | 'guess';
}

/**
 * Connects to REDIS_URL as what it is: asks a node whether it runs in cluster mode, then returns an
 * ioredis `Cluster` (seeded with every node given) or the usual `Redis` (connectRedis). Several
 * nodes that are not a cluster, or a cluster with a db in the URL: RedisModeError. Errors never
 * carry the password.
 */
export async function openRedisConnection(
  url: string,
  name: string,
  tls?: RedisTls,
  options: OpenConnectionOptions = {},
): Promise<RedisConnection> {
  const seeds = parseRedisSeeds(url);
  let detected: DetectedMode | undefined;
  try {
    detected = await detectRedisMode(seeds, tls, options);
  } catch (error) {
    const unreachable = error instanceof RedisFailureError && error.kind === 'CONNECTION';
    if (!unreachable || options.whenUnreachable !== 'guess') throw error;
  }
  const mode: RedisMode = detected?.mode ?? (seeds.seeds.length > 1 ? 'cluster' : 'standalone');
  if (mode === 'cluster')
    return { mode, client: connectCluster(seeds, name, tls, options), seeds, answeredBy: detected?.answeredBy };
  if (seeds.seeds.length > 1) {
    throw new RedisModeError(
      `REDIS_URL lists ${seeds.seeds.length} nodes, but Redis at ${detected?.answeredBy ?? seeds.endpoint.address} is not a Redis Cluster node (cluster_enabled:0): ` +
        'give one URL for a standalone Redis, or the nodes of a cluster',
    );
  }
  return { mode, client: connectRedis(seeds.url, name, tls, options), seeds, answeredBy: detected?.answeredBy };
}

/**
 * Why a cluster client's command failed, as redis.ts' unavailableKindOf says it, looking also at
 * the error ioredis keeps from the last node it tried (`lastNodeError` of "Failed to refresh slots
 * cache."): a refused login shows only there. That error also carries the refused AUTH command with
 * the password among its arguments: log it only through the app's redactor.
 */
export function clusterErrorKind(error: unknown): ReturnType<typeof unavailableKindOf> {
  const last = error instanceof Error ? (error as { lastNodeError?: unknown }).lastNodeError : undefined;
  const lastKind = unavailableKindOf(last);
  return lastKind !== undefined && lastKind !== 'CONNECTION' ? lastKind : unavailableKindOf(error);
}

/** The endpoint of one seed, for messages: its address, the shared user and TLS; no password. */
function seedEndpoint(seeds: RedisSeeds, seed: RedisSeed): RedisEndpoint {
  const host = seed.host.includes(':') ? `[${seed.host}]` : seed.host;
  return { ...seeds.endpoint, address: `${host}:${seed.port}` };
}

/**
 * The error without the command ioredis attaches to a reply error: a refused AUTH carries its
 * arguments, the password among them. Name, code and message stay (the message never holds it).
 */
function bare(error: unknown): Error {
  const copy = new Error(messageOf(error));
  if (error instanceof Error) {
    copy.name = error.name;
    const code = (error as { code?: unknown }).code;
    if (typeof code === 'string') Object.assign(copy, { code });
  }
  return copy;
}

function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
