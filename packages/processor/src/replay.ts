import type { Redis } from 'ioredis';
import type { RedisEventStore } from '@redsource/event-store';
import { SNAPSHOT_ID, type SnapshotStore } from '@redsource/snapshot-store';
import { Applier } from './applier.ts';
import { BatchBuilder } from './batch-builder.ts';
import type { HandlerRegistry } from './handlers.ts';
import { processorKeys } from './keys.ts';
import { silentLogger, type Logger } from './logger.ts';
import { emptyStreamStats } from './stats.ts';

export interface ReplayProgress {
  readonly stream: string;
  /** Entries read so far, over all streams. */
  readonly done: number;
  /** Entries in all streams when the replay started. */
  readonly total: number;
  readonly applied: number;
  /** Entries that cannot be applied (undecodable, invalid, handler failing): dead-lettered, once per entry even over several replays. */
  readonly stepped: number;
  readonly elapsedMs: number;
}

export interface ReplayOptions {
  readonly redis: Redis;
  readonly eventStore: RedisEventStore;
  readonly snapshots: SnapshotStore<unknown>;
  readonly handlers: HandlerRegistry;
  readonly streams?: readonly string[];
  readonly pageSize?: number;
  readonly maxDeliveries?: number;
  readonly onProgress?: (progress: ReplayProgress) => void;
  readonly logger?: Logger;
}

/**
 * Rebuilds every snapshot from the first entry of each stream. The cursors are reset first, so a
 * live processor cannot apply anything until the rebuild has passed its entries: it waits, then
 * carries on exactly where the rebuild ended. Memory is bounded by one page.
 */
export async function replay(options: ReplayOptions): Promise<ReplayProgress> {
  const { redis, snapshots } = options;
  const streams = options.streams ?? options.handlers.streams;
  const pageSize = options.pageSize ?? 1_000;
  const logger = options.logger ?? silentLogger;
  const builder = new BatchBuilder(options.eventStore.codec, options.handlers, snapshots, { maxDeliveries: options.maxDeliveries ?? 3, retryBackoffMs: 50 }, logger);
  const applier = new Applier(options.eventStore, snapshots, builder, { gapFillAfterMs: 0, shutdownTimeoutMs: 0 }, processorKeys.deadLetters, logger);

  const lengths = await Promise.all(streams.map((s) => redis.xlen(s)));
  const total = lengths.reduce((a, b) => a + b, 0);
  // Hold every apply first, then clear, then let the rebuild (and any live processor) start from the top.
  for (const stream of streams) await snapshots.holdForRebuild(stream);
  await deleteSnapshots(redis, snapshots.keyPrefix);
  for (const stream of streams) await snapshots.resetProgress(stream);

  const started = Date.now();
  let progress: ReplayProgress = { stream: streams[0] ?? '', done: 0, total, applied: 0, stepped: 0, elapsedMs: 0 };
  const stats = emptyStreamStats();
  for (const stream of streams) {
    for await (const page of options.eventStore.readPages(stream, { pageSize })) {
      const batch = await builder.build(stream, page, {});
      const outcome = await applier.apply(stream, batch, { stats, stopRequestedAt: () => undefined });
      progress = {
        stream,
        done: progress.done + page.length,
        total,
        applied: progress.applied + outcome.applied,
        stepped: progress.stepped + outcome.deadLettered,
        elapsedMs: Date.now() - started,
      };
      options.onProgress?.(progress);
    }
  }
  return progress;
}

/**
 * Deletes the snapshot hashes: keys that are the prefix plus a valid snapshot id and hold a hash
 * (never a stream or anything else that happens to share the prefix). SCAN page by page, never
 * KEYS; UNLINK so Redis frees memory lazily.
 */
async function deleteSnapshots(redis: Redis, prefix: string): Promise<void> {
  const pattern = `${prefix.replace(/[*?[\]\\]/g, '\\$&')}*`;
  const isSnapshotKey = (key: string) => key.startsWith(prefix) && SNAPSHOT_ID.test(key.slice(prefix.length));
  let cursor = '0';
  do {
    const [next, keys] = (await redis.call('SCAN', cursor, 'MATCH', pattern, 'COUNT', 1_000, 'TYPE', 'hash')) as [string, string[]];
    const doomed = keys.filter(isSnapshotKey);
    if (doomed.length > 0) await redis.unlink(...doomed);
    cursor = next;
  } while (cursor !== '0');
}
