import type { Redis } from 'ioredis';
import { RedisEventStore } from '@redsource/event-store';
import { createProcessor, processorSettingsSchema, type Logger } from '@redsource/processor';
import type { AppConfig } from '../config.ts';
import { profileCatalog, type ProfileStreams } from '../domain/events.ts';
import { profileProjection } from '../domain/handlers.ts';

/** The framework pieces of the profile app, wired from configuration. */
export function profileComponents(config: AppConfig, redis: Redis) {
  const streams: ProfileStreams = {
    updates: config.STREAM_UPDATES,
    activity: config.STREAM_ACTIVITY,
    friends: config.STREAM_FRIENDS,
  };
  const idempotency = definedOnly({
    windowMs: config.REDSOURCE_APPEND_ID_WINDOW_MS,
    maxIds: config.REDSOURCE_APPEND_ID_MAX,
  });
  const catalog = profileCatalog(streams);
  // The write side: appends carry the app's CloudEvents source and its idempotency window.
  const eventStore = new RedisEventStore({ redis, catalog, source: 'redsource/profile-api', idempotency });
  const projection = profileProjection(catalog, config.SNAPSHOT_PREFIX);
  const snapshots = projection.snapshots(redis);
  const handlers = projection.handlers;
  const newProcessor = (logger: Logger) =>
    createProcessor(projection, {
      connection: redis,
      logger: quietRepeats(logger),
      group: config.REDSOURCE_GROUP,
      ...(config.REDSOURCE_CONSUMER ? { consumer: config.REDSOURCE_CONSUMER } : {}),
      start: 'beginning',
      ...definedOnly({
        batchSize: config.REDSOURCE_BATCH_SIZE,
        blockMs: config.REDSOURCE_BLOCK_MS,
        partitions: config.REDSOURCE_PARTITIONS,
        leaseMs: config.REDSOURCE_LEASE_MS,
        rebalanceIntervalMs: config.REDSOURCE_REBALANCE_MS,
        heartbeatMs: config.REDSOURCE_HEARTBEAT_MS,
        gapFillAfterMs: config.REDSOURCE_GAP_FILL_AFTER_MS,
        maxDeliveries: config.REDSOURCE_MAX_DELIVERIES,
      }),
    });
  const streamNames: readonly string[] = [streams.updates, streams.activity, streams.friends];
  /** How the processors apply the snapshots: what read-your-writes and `replay` need to know of it. */
  const partitioning = {
    group: config.REDSOURCE_GROUP,
    partitions: config.REDSOURCE_PARTITIONS ?? processorSettingsSchema.shape.partitions.parse(undefined),
    subjectFields: (stream: string) => (eventStore.catalog.has(stream) ? eventStore.catalog.subjectFields(stream) : []),
  };
  return {
    streams,
    streamNames,
    eventStore,
    projection,
    snapshots,
    handlers,
    createProcessor: newProcessor,
    partitioning,
  };
}

export type ProfileComponents = ReturnType<typeof profileComponents>;

/**
 * The processor's logger, with a wait on Redis identical to the one before it (same message, same
 * reason: a loop retrying while Redis is away or refusing) logged at debug: the reason is said once,
 * not every second. Any other line in between lets the next one through again.
 */
export function quietRepeats(logger: Logger): Logger {
  let last: string | undefined;
  const pass = (level: 'info' | 'warn' | 'error') => (obj: object, msg?: string) => {
    last = undefined;
    logger[level](obj, msg);
  };
  return {
    debug: (obj, msg) => logger.debug(obj, msg),
    info: pass('info'),
    error: pass('error'),
    warn(obj, msg) {
      // Only the waits on Redis (they carry `waiting`): each failing entry's own warning stays a warning.
      if (!('waiting' in obj)) return pass('warn')(obj, msg);
      const fields = obj as { waiting?: unknown; err?: unknown };
      const reason: unknown = fields.waiting ?? fields.err ?? ''; // the processor logs both as strings
      const key = `${msg ?? ''}\u0000${String(reason)}`;
      if (key === last) return logger.debug(obj, msg);
      last = key;
      logger.warn(obj, msg);
    },
  };
}

function definedOnly<T extends Record<string, unknown>>(values: T): Partial<T> {
  return Object.fromEntries(Object.entries(values).filter(([, v]) => v !== undefined)) as Partial<T>;
}

/** The seed document's five example events, with fixed ids so seeding twice appends nothing. */
export async function appendSeedEvents({ eventStore, streams }: ProfileComponents): Promise<number> {
  const results = await Promise.all([
    eventStore.append(streams.updates, [
      { type: 'register', data: { userId: '1', name: 'Duffy', surname: 'Duck' }, metadata: { id: 'seed-1' } },
      { type: 'register', data: { userId: '2', name: 'Bugs', surname: 'Bunny' }, metadata: { id: 'seed-2' } },
    ]),
    eventStore.append(streams.activity, [
      { type: 'kick', data: { userId: '1', object: 'Bugs' }, metadata: { id: 'seed-3' } },
      { type: 'dislike', data: { userId: '1', object: 'Bugs face' }, metadata: { id: 'seed-4' } },
    ]),
    eventStore.append(streams.friends, [
      { type: 'remove', data: { userId: '1', friendId: '2' }, metadata: { id: 'seed-5' } },
    ]),
  ]);
  return results.reduce((n, r) => n + r.entryIds.length - r.duplicates.length, 0);
}
