import type { Cluster, Redis } from 'ioredis';
import { keySlot, type SnapshotStore } from '@redsource/snapshot-store';
import { describeRedisUnavailable, type RedisUnavailableKind } from '@redsource/event-store';
import { processorKeys } from './keys.ts';
import { toObject } from './replies.ts';
import { processorSettingsSchema } from './options.ts';
import {
  countUnapplied,
  cursorOrStart,
  idTime,
  readOwnership,
  readPartitionCount,
  type PartitionStatus,
} from './partitions/status.ts';
import { PartitionFinder } from './partitions/subject.ts';
import type { StreamStats } from './stats.ts';

export type { PartitionStatus } from './partitions/status.ts';

export interface ConsumerStatus {
  readonly name: string;
  /**
   * In the group's live members now (its membership renewed within the lease time): it gets a share
   * of the partitions. False for a processor that stopped (it leaves) or died (its membership ran
   * out); undefined when the members cannot be read.
   */
  readonly member: boolean | undefined;
  /** The partitions of this stream it holds the lease of now. */
  readonly partitions: readonly number[];
  /** Since its last heartbeat (ms); undefined if it never sent one. */
  readonly heartbeatAgeMs: number | undefined;
  /** What this consumer reported for this stream with its last heartbeat. */
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
  /** The consumer group (the processors' REDSOURCE_GROUP) these figures are of. */
  readonly group: string;
  readonly length: number;
  readonly lastEntryId: string | undefined;
  /**
   * Entries after the lowest partition cursor: not yet applied by every partition (most of them
   * may be applied by their own partition, see `unapplied`). Undefined while the group does not
   * exist on the stream (no processor of the group has started on it).
   */
  readonly lag: number | undefined;
  /** Entries not applied yet in their partition: the sum over the partitions (0 while there is no group). */
  readonly unapplied: number;
  /**
   * False when the stream was counted only part of the way (`StatusOptions.scanLimit` entries after
   * the lowest cursor, and more follow): `lag`, `unapplied` and `backlog` are then lower bounds.
   */
  readonly unappliedExact: boolean;
  /** Age of the oldest entry not applied yet, over every partition; undefined when none waits. */
  readonly oldestUnappliedMs: number | undefined;
  /** Entries of the stream not applied yet: `unapplied` (undefined without a group). */
  readonly backlog: number | undefined;
  /** How many partitions the group processes the stream in (the stored count once a processor prepared it). */
  readonly partitionCount: number;
  readonly partitions: readonly PartitionStatus[];
  /** The group's live members (processors sharing the partitions); undefined when the members cannot be read. */
  readonly members: number | undefined;
  /** Every processor of the group known now: live members, lease holders and recent heartbeats. */
  readonly consumers: readonly ConsumerStatus[];
  /** A rebuild (`replay`) holds the stream: nothing is applied until it has switched the snapshots over. */
  readonly heldByRebuild: boolean;
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
  /**
   * The partition count the processors are configured with (REDSOURCE_PARTITIONS); a stream's
   * stored count wins once a processor prepared it. Default: the processor's default.
   */
  readonly partitions?: number | undefined;
  /**
   * The subject fields of each stream (the event catalog's `subjectFields`), as the processors are
   * given them: an entry's partition, hence whether it waits, depends on them.
   */
  readonly subjectFields: (stream: string) => readonly string[];
  /**
   * At most this many entries after the lowest partition cursor are read per stream per call
   * (default 20,000, about 0.1 s a stream), so a status on a huge backlog stays cheap and within
   * the second /metrics and the dashboard give it. Past it the counts are lower bounds
   * (`unappliedExact: false`).
   */
  readonly scanLimit?: number | undefined;
}

/** Everything `redsource status` shows, per stream: read from Redis, so it covers every processor. */
export async function streamStatus(options: StatusOptions): Promise<StreamStatus[]> {
  const { redis, group, snapshots } = options;
  const configured = options.partitions ?? DEFAULT_PARTITIONS;
  const scanLimit = options.scanLimit ?? DEFAULT_SCAN_LIMIT;
  const now = Date.now();
  const [reportHash, heartbeats, refusals, counts] = await Promise.all([
    redis.hgetall(processorKeys.consumerStats(group)),
    redis.hgetall(processorKeys.heartbeats(group)),
    // A processor waiting because Redis refuses writes cannot say so: its heartbeat is a write too.
    // Redis's own state tells it for every consumer at once.
    writeRefusals(redis, options.streams),
    Promise.all(options.streams.map((stream) => readPartitionCount(redis, stream, group, configured))),
  ]);
  const reports = parseReports(reportHash);
  // Leases are the group's, one per partition of each stream: read once.
  const ownership = await readOwnership(redis, group, options.streams, counts, now);
  const holdings = new Map<string, Map<string, number[]>>();
  for (const [stream, leases] of ownership.leases) {
    for (const [p, lease] of [...leases].sort(([a], [b]) => a - b)) {
      let byStream = holdings.get(lease.owner);
      if (!byStream) holdings.set(lease.owner, (byStream = new Map<string, number[]>()));
      byStream.set(stream, [...(byStream.get(stream) ?? []), p]);
    }
  }
  const live = ownership.members && new Set(ownership.members.map((m) => m.name));
  const names = [
    ...new Set([...(ownership.members ?? []).map((m) => m.name), ...holdings.keys(), ...Object.keys(heartbeats)]),
  ].sort();
  return Promise.all(
    options.streams.map(async (stream, i): Promise<StreamStatus> => {
      const count = counts[i] ?? configured;
      const [length, last, groupInfo, totals, deadLetters, hold, cursors] = await Promise.all([
        redis.xlen(stream),
        redis.xrevrange(stream, '+', '-', 'COUNT', 1),
        redis.xinfo('GROUPS', stream).catch(() => []) as Promise<unknown[][]>,
        snapshots.totals(stream),
        redis.xlen(processorKeys.deadLetters(stream)),
        redis.get(snapshots.holdKey(stream)),
        readCursors(redis, stream, count, snapshots),
      ]);
      // The group marks where the projection starts: without it nothing says what will be applied.
      const grouped = groupInfo.map(toObject).some((g) => g['name'] === group);
      const scan = grouped
        ? await countUnapplied(redis, stream, cursors, new PartitionFinder(count, options.subjectFields), scanLimit)
        : undefined;
      const partitions = cursors.map((cursor, partition): PartitionStatus => {
        const lease = ownership.leases.get(stream)?.get(partition);
        const own = scan?.partitions[partition];
        return {
          partition,
          owner: lease?.owner,
          token: lease?.token,
          cursor,
          unapplied: own?.unapplied ?? 0,
          unappliedExact: scan?.exact ?? true,
          oldestUnappliedMs: own?.oldest === undefined ? undefined : Math.max(0, now - idTime(own.oldest)),
        };
      });
      const consumers = names.map((name): ConsumerStatus => {
        const beat = heartbeats[name];
        return {
          name,
          member: live?.has(name),
          // A copy per row: a value shared between rows reads as a cycle to a serializer that guards against them.
          partitions: [...(holdings.get(name)?.get(stream) ?? [])],
          heartbeatAgeMs: beat === undefined ? undefined : now - Number(beat),
          stats: reports.get(name)?.[stream],
        };
      });
      const stats = consumers.flatMap((c) => (c.stats ? [c.stats] : []));
      const batches = stats.reduce((n, s) => n + s.batches, 0);
      const latestError = stats
        .filter((s) => s.lastErrorAt !== undefined)
        .sort((a, b) => (b.lastErrorAt ?? 0) - (a.lastErrorAt ?? 0))[0];
      const unapplied = partitions.reduce((n, p) => n + p.unapplied, 0);
      const ages = partitions.flatMap((p) => (p.oldestUnappliedMs === undefined ? [] : [p.oldestUnappliedMs]));
      return {
        stream,
        group,
        length,
        lastEntryId: last[0]?.[0],
        lag: scan?.lag,
        unapplied,
        unappliedExact: scan?.exact ?? true,
        oldestUnappliedMs: ages.length > 0 ? Math.max(...ages) : undefined,
        backlog: scan ? unapplied : undefined,
        partitionCount: count,
        partitions,
        members: ownership.members?.length,
        consumers,
        heldByRebuild: hold !== null,
        applied: totals.applied,
        skipped: totals.skipped,
        deadLettered: totals.deadLettered,
        deadLetters,
        avgBatchMs: batches > 0 ? stats.reduce((n, s) => n + s.totalBatchMs, 0) / batches : undefined,
        lastBatchMs: stats.map((s) => s.lastBatchMs).find((ms) => ms > 0),
        lastError: latestError?.lastError,
        lastErrorAt: latestError?.lastErrorAt,
        waiting: waitingOf(consumers, refusals[i]),
      };
    }),
  );
}

/** The processor's default partition count, when the app passes none. */
const DEFAULT_PARTITIONS = processorSettingsSchema.shape.partitions.parse(undefined);

/** Entries read per stream per status, at most (see `StatusOptions.scanLimit`). */
const DEFAULT_SCAN_LIMIT = 20_000;

/**
 * Each partition's cursor. Where a partition has none yet while the stream's pre-partition cursor
 * is there, that one: the first processor to prepare the stream adopts it for every partition.
 */
async function readCursors(
  redis: Redis,
  stream: string,
  count: number,
  snapshots: SnapshotStore<unknown>,
): Promise<string[]> {
  const [old, ...stored] = await Promise.all([
    redis.get(snapshots.cursorKey(stream)),
    ...Array.from({ length: count }, (_, p) => redis.get(snapshots.cursorKey(stream, p))),
  ]);
  return stored.map((cursor) => cursorOrStart(cursor ?? old));
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
 * Per stream, whether Redis refuses the writes its processing needs now (see writeRefusal). On a
 * Redis Cluster, INFO would be answered by any one node, so every master is asked: the refusal of
 * the master of the stream's slot (its bookkeeping and partitions) comes first, else that of any
 * other master (the snapshots are spread over all of them), naming the node.
 */
async function writeRefusals(redis: Redis, streams: readonly string[]): Promise<(Refusal | undefined)[]> {
  if ((redis as { isCluster?: boolean }).isCluster !== true) {
    const refusal = await writeRefusal(redis, false);
    return streams.map(() => refusal);
  }
  const cluster = redis as unknown as Cluster;
  const answers = await Promise.all(
    cluster.nodes('master').map(async (node) => {
      const at = `${node.options.host ?? '?'}:${node.options.port ?? '?'}`;
      const refusal = await writeRefusal(node, true);
      return refusal && { at, refusal: { kind: refusal.kind, reason: `${refusal.reason} (Redis Cluster node ${at})` } };
    }),
  );
  const refusing = answers.filter((a) => a !== undefined).sort((a, b) => a.at.localeCompare(b.at));
  return streams.map((stream) => {
    const owner = (cluster.slots[keySlot(stream)] ?? [])[0];
    return (refusing.find((a) => a.at === owner) ?? refusing[0])?.refusal;
  });
}

/**
 * Whether Redis refuses writes now, read from INFO: out of memory (used_memory past maxmemory with a
 * policy that evicts nothing the processors write), a read-only replica, loading, or a failed AOF
 * write. Undefined when it accepts them, or INFO is not allowed (an ACL without it). A cluster node
 * that turned replica is not read-only to a cluster client: it answers MOVED, which the client follows.
 */
async function writeRefusal(redis: Redis, clusterNode: boolean): Promise<Refusal | undefined> {
  const text = await redis.info().catch(() => '');
  const info = new Map(
    text
      .split('\r\n')
      .filter((l) => l.includes(':'))
      .map((l) => [l.slice(0, l.indexOf(':')), l.slice(l.indexOf(':') + 1)]),
  );
  const refusal = (kind: RedisUnavailableKind, detail: string): Refusal => ({
    kind,
    reason: `${kind}: ${describeRedisUnavailable(kind)}; ${detail}`,
  });
  if (info.get('loading') === '1') return refusal('LOADING', 'INFO loading:1');
  if (!clusterNode && info.get('role') === 'slave' && info.get('slave_read_only') === '1') {
    return refusal(
      'READONLY',
      `INFO role:slave of ${info.get('master_host') ?? '?'}:${info.get('master_port') ?? '?'}`,
    );
  }
  // What Redis compares with maxmemory: replication and AOF buffers are not counted.
  const used = Number(info.get('used_memory')) - Number(info.get('mem_not_counted_for_evict') ?? 0);
  const max = Number(info.get('maxmemory'));
  const policy = info.get('maxmemory_policy') ?? '';
  // volatile-* evicts only keys with a TTL, and nearly nothing redsource writes has one.
  if (max > 0 && used > max && (policy === 'noeviction' || policy.startsWith('volatile-'))) {
    return refusal(
      'OOM',
      `used_memory ${info.get('used_memory_human') ?? used} > maxmemory ${info.get('maxmemory_human') ?? max} (${policy})`,
    );
  }
  // A failed RDB save refuses writes only with save points and stop-writes-on-bgsave-error, which INFO
  // does not show: that case is known from the consumers' reports once a heartbeat gets through.
  if (info.get('aof_last_write_status') === 'err') return refusal('MISCONF', 'INFO aof_last_write_status:err');
  return undefined;
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
