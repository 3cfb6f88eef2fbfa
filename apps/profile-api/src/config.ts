import { existsSync } from 'node:fs';
import { z } from 'zod';
import { redactUrl } from './runtime/redact.ts';
import { parseRedisSeeds } from './runtime/redis-connection.ts';

export { redactUrl };

/** Thrown at start-up for a bad setting; the message names the variable. */
export class ConfigError extends Error {
  readonly code = 'RS_CONFIG_INVALID';
  constructor(message: string) {
    super(message);
    this.name = 'ConfigError';
  }
}

const int = (min: number, max: number) => z.coerce.number().int().min(min).max(max);
const streamName = z.string().regex(/^[^\s{}]{1,200}$/, 'a stream name without spaces or braces');
const flag = z
  .enum(['0', '1', 'false', 'true'], "'1' (or 'true') to turn on, '0' (or 'false') to leave off")
  .transform((v) => v === '1' || v === 'true');
/** A browser origin: scheme, host and port only (no path, not even a trailing slash). */
const ORIGIN = /^https?:\/\/(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(:\d{1,5})?$/;

function parsesAsUrl(value: string): boolean {
  try {
    new URL(value);
    return true;
  } catch {
    return false;
  }
}

/** ioredis decodes the user and password with decodeURIComponent: a stray `%` would throw a URIError deep inside it. */
function userinfoDecodes(value: string): boolean {
  const userinfo = /^[a-z]+:\/\/([^/?#]*)@/i.exec(value)?.[1] ?? '';
  try {
    for (const part of userinfo.split(':')) decodeURIComponent(part);
    return true;
  } catch {
    return false;
  }
}

const firstNode = (value: string) => value.split(',')[0] ?? value;

function seedsParse(value: string): boolean {
  if (!value.includes(',')) return true;
  try {
    parseRedisSeeds(value);
    return true;
  } catch {
    return false;
  }
}

/** Every environment variable the app reads, with its default: the one place defaults live. */
export const envSchema = z.object({
  REDIS_URL: z
    .string()
    .regex(/^rediss?:\/\//, 'must start with redis:// or rediss:// (e.g. redis://127.0.0.1:6379)')
    // A Redis Cluster may be named by several seed nodes, comma-separated: the first is a full URL.
    .refine(
      (v) => parsesAsUrl(firstNode(v)),
      'must be a URL like redis://[user:password@]host:port[/db] (percent-encode special characters in the password)',
    )
    .refine(
      (v) => userinfoDecodes(firstNode(v)),
      "the user or password holds a '%' that is not a percent-encoding like %40 (write a literal % as %25)",
    )
    .refine(
      seedsParse,
      'several nodes must be comma-separated redis://host:port URLs or host:port pairs of one Redis Cluster (e.g. redis://10.0.0.1:7000,10.0.0.2:7000)',
    )
    .optional(),
  /** With rediss://: a PEM file of the CA that signed the server's certificate (else the system's CAs). */
  REDIS_TLS_CA: z.string().min(1).refine(existsSync, 'no such file (a PEM CA certificate is expected)').optional(),
  /** With rediss://: skip certificate verification (self-signed development setups only). */
  REDIS_TLS_INSECURE: flag.default(false),
  PORT: int(0, 65_535).default(3000),
  HOST: z.string().min(1).default('127.0.0.1'),
  LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
  /** Requests per client IP per window; 0 = no limit (the default: callers are mostly services behind few addresses). */
  RATE_LIMIT_MAX: int(0, 1_000_000_000).default(0),
  RATE_LIMIT_WINDOW_MS: int(1, 86_400_000).default(1000),
  /** MiB of rendered profiles the API keeps, each sent again while its snapshot is unchanged; 0 = none. */
  PROFILE_CACHE_MB: int(0, 65_536).default(32),
  /** Unset = no CORS headers; `*` = any origin; else a comma-separated list of origins. */
  CORS_ORIGIN: z
    .string()
    .trim()
    .refine(
      (v) => v === '*' || v.split(',').every((o) => ORIGIN.test(o.trim())),
      "'*' or a comma-separated list of origins like https://app.example.com,http://localhost:5173 (scheme://host[:port], no path or trailing slash)",
    )
    .transform((v): '*' | string[] => (v === '*' ? '*' : v.split(',').map((o) => o.trim())))
    .optional(),
  STREAM_UPDATES: streamName.default('user_updates'),
  STREAM_ACTIVITY: streamName.default('user_activity'),
  STREAM_FRIENDS: streamName.default('user_friends'),
  SNAPSHOT_PREFIX: z
    .string()
    .regex(/^[A-Za-z0-9_:.-]{1,100}$/, 'letters, digits and _ : . -')
    .default('user_snapshot_'),
  REDSOURCE_GROUP: z
    .string()
    .regex(/^[A-Za-z0-9_.:-]{1,128}$/, '1-128 characters from A-Z a-z 0-9 _ . : -')
    .default('profile-api'),
  REDSOURCE_CONSUMER: z.string().min(1).optional(),
  // Processor tunables: unset means the processor's own default (packages/processor/src/options.ts).
  REDSOURCE_BATCH_SIZE: int(1, 10_000).optional(),
  REDSOURCE_BLOCK_MS: int(1, 60_000).optional(),
  REDSOURCE_PARTITIONS: int(1, 1_024).optional(),
  REDSOURCE_LEASE_MS: int(200, 600_000).optional(),
  REDSOURCE_REBALANCE_MS: int(20, 60_000).optional(),
  REDSOURCE_HEARTBEAT_MS: int(50, 3_600_000).optional(),
  REDSOURCE_GAP_FILL_AFTER_MS: int(0, 3_600_000).optional(),
  REDSOURCE_MAX_DELIVERIES: int(1, 1_000).optional(),
  // The idempotent-append window: unset means the event store's defaults (packages/event-store/src/options.ts).
  REDSOURCE_APPEND_ID_WINDOW_MS: int(1_000, 365 * 86_400_000).optional(),
  REDSOURCE_APPEND_ID_MAX: int(1, 100_000_000).optional(),
  // `replay`'s lease: unset means the processor's defaults (packages/processor/src/rebuild-lease.ts).
  REDSOURCE_REBUILD_LEASE_MS: int(100, 3_600_000).optional(),
  REDSOURCE_REBUILD_RENEW_MS: int(10, 3_600_000).optional(),
  /** Where an embedded redis-server keeps its AOF when neither REDIS_URL nor a local Redis is there. */
  REDSOURCE_DATA_DIR: z.string().min(1).default('.data'),
});

export type AppConfig = z.output<typeof envSchema>;

/** The API's settings when no configuration is given (tests, tools): the defaults above. */
export const DEFAULT_PROFILE_CACHE_MB: number = envSchema.shape.PROFILE_CACHE_MB.parse(undefined);

export function loadConfig(env: NodeJS.ProcessEnv = process.env): AppConfig {
  const relevant = Object.fromEntries(Object.keys(envSchema.shape).map((k) => [k, env[k] === '' ? undefined : env[k]]));
  const parsed = envSchema.safeParse(relevant);
  if (!parsed.success) {
    // Values are shown as given, except REDIS_URL, whose password never is.
    const shown = (key: string) => {
      const value = relevant[key];
      return JSON.stringify(key === 'REDIS_URL' && value !== undefined ? redactUrl(value) : value);
    };
    const lines = parsed.error.issues.map(
      (i) => `  ${i.path.join('.')}: ${i.message} (got ${shown(String(i.path[0]))})`,
    );
    throw new ConfigError(`Invalid configuration:\n${lines.join('\n')}`);
  }
  return parsed.data;
}
