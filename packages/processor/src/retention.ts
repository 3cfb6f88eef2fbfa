import type { Redis } from 'ioredis';
import { compareEntryIds, snapshotKeys, type SnapshotStore } from '@redsource/snapshot-store';
import { processorKeys } from './keys.ts';
import { toObject } from './replies.ts';

/** The partitioned processing of the stream, when the snapshots are applied that way. */
export interface PartitionedBy {
  readonly group: string;
  readonly partitions: number;
}

/**
 * Trims a stream below the oldest point still needed: for every consumer group on the stream (other
 * than the processors' own, which only marks where they started), its oldest pending entry (or,
 * with nothing pending, what it was last given), and the snapshots' applied position (partitioned:
 * the lowest partition cursor, every entry up to which is applied in every partition).
 * Skipped while a rebuild runs, since that reads the stream from its first entry. Every input only
 * moves forward, so a point computed a moment ago is still safe when XTRIM runs. Returns the MINID
 * used, or undefined when nothing could be trimmed.
 */
export async function trimApplied(
  redis: Redis,
  stream: string,
  snapshots: SnapshotStore<unknown>,
  partitioned?: PartitionedBy,
): Promise<string | undefined> {
  if ((await redis.exists(processorKeys.rebuild(snapshots.projection, snapshots.keyPrefix))) === 1) return undefined;
  let safe: string | undefined;
  const cursors = partitioned
    ? await Promise.all(Array.from({ length: partitioned.partitions }, (_, p) => snapshots.cursor(stream, p)))
    : [await snapshots.cursor(stream)];
  for (const cursor of cursors) {
    if (!/^\d+-\d+$/.test(cursor) || cursor === '0-0') return undefined;
    if (safe === undefined || compareEntryIds(cursor, safe) < 0) safe = cursor;
  }
  const groups = ((await redis.xinfo('GROUPS', stream)) as unknown[][]).map(toObject);
  for (const group of groups) {
    const name = String(group['name']);
    if (name === partitioned?.group) continue;
    const pending = Number(group['pending'] ?? 0);
    const lastDelivered: unknown = group['last-delivered-id'] ?? '0-0'; // an entry id (a string reply)
    let needed = String(lastDelivered);
    if (pending > 0) {
      const oldest = (await redis.xpending(stream, name, '-', '+', 1)) as [string, string, number, number][];
      needed = oldest[0]?.[0] ?? needed;
    }
    if (safe === undefined || compareEntryIds(needed, safe) < 0) safe = needed;
  }
  if (safe === undefined || safe === '0-0') return undefined;
  const [first] = await redis.xrange(stream, '-', '+', 'COUNT', 1);
  if (!first || compareEntryIds(first[0], safe) >= 0) return safe;
  // The mark and the trim in one transaction: a trim without its mark would let a replay rebuild
  // from a stream missing its start. Redis refusing writes (OOM, READONLY) aborts both at EXEC.
  const replies =
    (await redis.multi().set(processorKeys.trimmedBelow(stream), safe).xtrim(stream, 'MINID', safe).exec()) ?? [];
  for (const [error] of replies) if (error) throw error;
  await forgetDeadLettered(redis, stream, safe);
  return safe;
}

/**
 * Removes from the stream's dead-lettered-ids set the ids below `below`, entries trimmed from the
 * stream: no projection can meet them again (the live cursor is past them, and a replay of a
 * trimmed stream is refused), so they need no remembering. The set keeps the ids of dead-lettered
 * entries still in the stream, which a rebuild may meet. One SSCAN of the set: it holds only the
 * dead letters since the previous trim.
 */
export async function forgetDeadLettered(redis: Redis, stream: string, below: string): Promise<number> {
  const key = snapshotKeys.deadLettered(stream);
  let cursor = '0';
  let forgotten = 0;
  do {
    const [next, members] = await redis.sscan(key, cursor, 'COUNT', 1000);
    cursor = next;
    const doomed = members.filter((id) => compareEntryIds(id, below) < 0);
    if (doomed.length > 0) forgotten += await redis.srem(key, ...doomed);
  } while (cursor !== '0');
  return forgotten;
}
