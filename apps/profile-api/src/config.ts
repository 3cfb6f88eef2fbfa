import { z } from 'zod';

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

/** Every environment variable the app reads, with its default: the one place defaults live. */
export const envSchema = z.object({
  REDIS_URL: z
    .string()
    .regex(/^rediss?:\/\//, 'must start with redis:// or rediss:// (e.g. redis://127.0.0.1:6379)')
    .optional(),
  PORT: int(0, 65_535).default(3000),
  HOST: z.string().min(1).default('127.0.0.1'),
  LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
  STREAM_UPDATES: streamName.default('user_updates'),
  STREAM_ACTIVITY: streamName.default('user_activity'),
  STREAM_FRIENDS: streamName.default('user_friends'),
  SNAPSHOT_PREFIX: z.string().regex(/^[A-Za-z0-9_:.-]{1,100}$/, 'letters, digits and _ : . -').default('user_snapshot_'),
  REDSOURCE_GROUP: z.string().min(1).default('profile-api'),
  REDSOURCE_CONSUMER: z.string().min(1).optional(),
  // Processor tunables: unset means the processor's own default (packages/processor/src/options.ts).
  REDSOURCE_BATCH_SIZE: int(1, 10_000).optional(),
  REDSOURCE_BLOCK_MS: int(1, 60_000).optional(),
  REDSOURCE_CLAIM_TIMEOUT_MS: int(100, 86_400_000).optional(),
  REDSOURCE_CLAIM_INTERVAL_MS: int(50, 3_600_000).optional(),
  REDSOURCE_HEARTBEAT_MS: int(50, 3_600_000).optional(),
  REDSOURCE_GAP_FILL_AFTER_MS: int(0, 3_600_000).optional(),
  REDSOURCE_MAX_DELIVERIES: int(1, 1_000).optional(),
  /** Where an embedded redis-server keeps its AOF when neither REDIS_URL nor a local Redis is there. */
  REDSOURCE_DATA_DIR: z.string().min(1).default('.data'),
});

export type AppConfig = z.output<typeof envSchema>;

export function loadConfig(env: NodeJS.ProcessEnv = process.env): AppConfig {
  const relevant = Object.fromEntries(Object.keys(envSchema.shape).map((k) => [k, env[k] === '' ? undefined : env[k]]));
  const parsed = envSchema.safeParse(relevant);
  if (!parsed.success) {
    const lines = parsed.error.issues.map((i) => `  ${i.path.join('.')}: ${i.message} (got ${JSON.stringify(relevant[String(i.path[0])])})`);
    throw new ConfigError(`Invalid configuration:\n${lines.join('\n')}`);
  }
  return parsed.data;
}
