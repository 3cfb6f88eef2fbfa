import type { Redis } from 'ioredis';
import type { SnapshotStore } from '@redsource/snapshot-store';
import { describeRedisUnavailable, type RedisUnavailableKind } from '@redsource/event-store';
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

/** Why processing of a stream waits on Redis. */
export interface StreamWaiting {
  readonly kind: RedisUnavailableKind;
  /** One line for an operator: `OOM: Redis is out of memory (...)`. */
  readonly reason: string;
  /** Since when, if a consumer reported it (ms since epoch). */
  readonly since: number | undefined;
  /** `redis`: Redis's own state says it refuses writes now; `consumers`: consumers reported it with their last heartbeat. */
  readonly source: 'redis' | 'consumers';
  /** Consumers that reported waiting (with a heartbeat Redis accepted; under OOM or READONLY none can be written, see `source`). */
  readonly consumers: readonly string[];
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
  /** Set while the stream's processing waits for Redis to accept writes again, with why. */
  readonly waiting: StreamWaiting | undefined;
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
  // A processor waiting because Redis refuses writes cannot say so: its heartbeat is a write too.
  // Redis's own state tells it for every consumer at once.
  const refusal = await writeRefusal(redis);
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
        waiting: waitingOf(consumerRows, refusal),
      };
    }),
  );
}

function waitingOf(consumers: readonly ConsumerStatus[], refusal: Refusal | undefined): StreamWaiting | undefined {
  const reporting = consumers.filter((c) => c.stats?.waiting !== undefined);
  const names = reporting.map((c) => c.name);
  if (refusal) return { ...refusal, since: undefined, source: 'redis', consumers: names };
  const first = reporting.map((c) => c.stats?.waiting).sort((a, b) => (a?.since ?? 0) - (b?.since ?? 0))[0];
  return first && { kind: first.kind, reason: first.reason, since: first.since, source: 'consumers', consumers: names };
}

interface Refusal {
  readonly kind: RedisUnavailableKind;
  readonly reason: string;
}

/**
 * Whether Redis refuses writes now, read from INFO: out of memory (used_memory past maxmemory with a
 * policy that evicts nothing the processors write), a read-only replica, loading, or a failed AOF
 * write. Undefined when it accepts them, or INFO is not allowed (an ACL without it).
 */
async function writeRefusal(redis: Redis): Promise<Refusal | undefined> {
  const text = await redis.info().catch(() => '');
  const info = new Map(text.split('\r\n').filter((l) => l.includes(':')).map((l) => [l.slice(0, l.indexOf(':')), l.slice(l.indexOf(':') + 1)]));
  const refusal = (kind: RedisUnavailableKind, detail: string): Refusal => ({ kind, reason: `${kind}: ${describeRedisUnavailable(kind)}; ${detail}` });
  if (info.get('loading') === '1') return refusal('LOADING', 'INFO loading:1');
  if (info.get('role') === 'slave' && info.get('slave_read_only') === '1') {
    return refusal('READONLY', `INFO role:slave of ${info.get('master_host') ?? '?'}:${info.get('master_port') ?? '?'}`);
  }
  // What Redis compares with maxmemory: replication and AOF buffers are not counted.
  const used = Number(info.get('used_memory')) - Number(info.get('mem_not_counted_for_evict') ?? 0);
  const max = Number(info.get('maxmemory'));
  const policy = info.get('maxmemory_policy') ?? '';
  // volatile-* evicts only keys with a TTL, and nearly nothing redsource writes has one.
  if (max > 0 && used > max && (policy === 'noeviction' || policy.startsWith('volatile-'))) {
    return refusal('OOM', `used_memory ${info.get('used_memory_human') ?? used} > maxmemory ${info.get('maxmemory_human') ?? max} (${policy})`);
  }
  // A failed RDB save refuses writes only with save points and stop-writes-on-bgsave-error, which INFO
  // does not show: that case is known from the consumers' reports once a heartbeat gets through.
  if (info.get('aof_last_write_status') === 'err') return refusal('MISCONF', 'INFO aof_last_write_status:err');
  return undefined;
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
