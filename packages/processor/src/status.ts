import type { Redis } from 'ioredis';
import type { SnapshotStore } from '@redsource/snapshot-store';
import { processorKeys } from './keys.ts';
import { toObject } from './replies.ts';
import type { StreamStats } from './stats.ts';

export interface ConsumerStatus {
  readonly name: string;
  readonly pending: number;
  /** Since its last read or claim (ms). */
  readonly idleMs: number;
  /** Since its last heartbeat (ms); undefined if it never sent one. */
  readonly heartbeatAgeMs: number | undefined;
  /** What this consumer reported with its last heartbeat. */
  readonly stats: Readonly<StreamStats> | undefined;
}

export interface StreamStatus {
  readonly stream: string;
  readonly length: number;
  readonly lastEntryId: string | undefined;
  /** Entries not yet delivered to the group (XINFO GROUPS lag); undefined if Redis cannot tell. */
  readonly lag: number | undefined;
  readonly pending: number;
  /** How long the oldest pending entry has waited since its last delivery (ms). */
  readonly oldestPendingMs: number | undefined;
  readonly consumers: readonly ConsumerStatus[];
  /** Applied position of the snapshots (last applied entry id). */
  readonly cursor: string;
  /** Entries between the cursor and the end of the stream. */
  readonly unapplied: number;
  readonly applied: number;
  readonly skipped: number;
  readonly deadLettered: number;
  /** Entries in the dead-letter stream now (after retries and drops). */
  readonly deadLetters: number;
  /** Averages and last values over the consumers' reports. */
  readonly avgBatchMs: number | undefined;
  readonly lastBatchMs: number | undefined;
  readonly lastError: string | undefined;
  readonly lastErrorAt: number | undefined;
}

export interface StatusOptions {
  readonly redis: Redis;
  readonly streams: readonly string[];
  readonly group: string;
  readonly snapshots: SnapshotStore<unknown>;
}

/** Everything `redsource status` shows, per stream: read from Redis, so it covers every processor. */
export async function streamStatus(options: StatusOptions): Promise<StreamStatus[]> {
  const { redis, group, snapshots } = options;
  const reports = parseReports(await redis.hgetall(processorKeys.consumerStats(group)));
  const heartbeats = await redis.hgetall(processorKeys.heartbeats(group));
  const now = Date.now();
  return Promise.all(
    options.streams.map(async (stream): Promise<StreamStatus> => {
      const [length, last, groupInfo, consumers, oldest, cursor, totals, deadLetters] = await Promise.all([
        redis.xlen(stream),
        redis.xrevrange(stream, '+', '-', 'COUNT', 1),
        redis.xinfo('GROUPS', stream).catch(() => []) as Promise<unknown[][]>,
        redis.xinfo('CONSUMERS', stream, group).catch(() => []) as Promise<unknown[][]>,
        redis.xpending(stream, group, 'IDLE', 0, '-', '+', 1).catch(() => []) as Promise<unknown[][]>,
        snapshots.cursor(stream),
        snapshots.totals(stream),
        redis.xlen(processorKeys.deadLetters(stream)),
      ]);
      const info = groupInfo.map(toObject).find((g) => g['name'] === group);
      const consumerRows = consumers.map(toObject).map((c): ConsumerStatus => {
        const name = String(c['name']);
        const beat = heartbeats[name];
        return {
          name,
          pending: Number(c['pending'] ?? 0),
          idleMs: Number(c['idle'] ?? 0),
          heartbeatAgeMs: beat === undefined ? undefined : now - Number(beat),
          stats: reports.get(name)?.[stream],
        };
      });
      const stats = consumerRows.flatMap((c) => (c.stats ? [c.stats] : []));
      const batches = stats.reduce((n, s) => n + s.batches, 0);
      const latestError = stats.filter((s) => s.lastErrorAt !== undefined).sort((a, b) => (b.lastErrorAt ?? 0) - (a.lastErrorAt ?? 0))[0];
      const lastEntryId = last[0]?.[0];
      return {
        stream,
        length,
        lastEntryId,
        lag: info && info['lag'] !== null && info['lag'] !== undefined ? Number(info['lag']) : undefined,
        pending: info ? Number(info['pending'] ?? 0) : 0,
        oldestPendingMs: oldest[0] ? Number(oldest[0][2]) : undefined,
        consumers: consumerRows,
        cursor,
        unapplied: cursor === lastEntryId ? 0 : await countAfter(redis, stream, cursor),
        applied: totals.applied,
        skipped: totals.skipped,
        deadLettered: totals.deadLettered,
        deadLetters,
        avgBatchMs: batches > 0 ? stats.reduce((n, s) => n + s.totalBatchMs, 0) / batches : undefined,
        lastBatchMs: stats.map((s) => s.lastBatchMs).find((ms) => ms > 0),
        lastError: latestError?.lastError,
        lastErrorAt: latestError?.lastErrorAt,
      };
    }),
  );
}

/** Entries after an id, counted without reading them all: XLEN minus the entries up to the id. */
async function countAfter(redis: Redis, stream: string, cursor: string): Promise<number> {
  if (!/^\d+-\d+$/.test(cursor)) return redis.xlen(stream);
  // Redis 7.0 has no XCOUNT; the cursor is near the end when healthy, so page from it.
  let count = 0;
  let from = `(${cursor}`;
  for (;;) {
    const page = await redis.xrange(stream, from, '+', 'COUNT', 10_000);
    count += page.length;
    if (page.length < 10_000) return count;
    from = `(${page[page.length - 1]?.[0] ?? ''}`;
  }
}

function parseReports(hash: Record<string, string>): Map<string, Record<string, StreamStats>> {
  const reports = new Map<string, Record<string, StreamStats>>();
  for (const [consumer, json] of Object.entries(hash)) {
    try {
      reports.set(consumer, JSON.parse(json) as Record<string, StreamStats>);
    } catch {
      // A report that does not parse is skipped: status must never fail on one bad field.
    }
  }
  return reports;
}
