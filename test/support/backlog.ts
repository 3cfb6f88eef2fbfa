import { createHash } from 'node:crypto';
import type { Redis } from 'ioredis';
import { compareEntryIds, type SnapshotStore } from '@redsource/snapshot-store';
import { partitionKeys } from '../../packages/processor/src/partitions/keys.ts';
import { subjectOfEntry } from '../../packages/processor/src/partitions/subject.ts';

/**
 * What a partitioned group has left to apply on a stream, read from Redis (so it covers every
 * processor of the group). Nothing is copied anywhere: an entry is applied once its partition's
 * cursor is at or past its id, so what is left is, per partition, the source stream's entries of
 * that partition after its cursor. The hash is written out here again (not taken from the
 * processor), so a test checks the processor against the design rather than against itself.
 */

/** sha1(subject), first 32 bits, modulo the count: the design's partition function, written independently of subject.ts. */
export function designPartition(subject: string | Buffer, partitions: number): number {
  return Number.parseInt(createHash('sha1').update(subject).digest('hex').slice(0, 8), 16) % partitions;
}

/** The partition of a raw entry by the design: its subject's (subjectOfEntry), partition 0 without a subject. */
export function designPartitionOfEntry(
  fields: readonly string[],
  subjectFields: readonly string[],
  partitions: number,
): number {
  const subject = subjectOfEntry(fields, subjectFields);
  return subject === undefined ? 0 : designPartition(subject, partitions);
}

/** Per partition, partition 0 first: the stream's entries of that partition after the partition's cursor. */
export async function unappliedPerPartition(
  redis: Redis,
  snapshots: Pick<SnapshotStore<unknown>, 'cursor'>,
  stream: string,
  partitions: number,
  subjectFields: readonly string[],
): Promise<number[]> {
  const cursors = await Promise.all(Array.from({ length: partitions }, (_, p) => snapshots.cursor(stream, p)));
  const counts = cursors.map(() => 0);
  const lowest = cursors.reduce((min, c) => (compareEntryIds(c, min) < 0 ? c : min), cursors[0] ?? '0-0');
  let from = `(${lowest}`;
  for (;;) {
    const page = (await redis.xrange(stream, from, '+', 'COUNT', 1_000)) as [string, string[]][];
    for (const [id, fields] of page) {
      const p = designPartitionOfEntry(fields, subjectFields, partitions);
      if (compareEntryIds(id, cursors[p] as string) > 0) counts[p] = (counts[p] as number) + 1;
    }
    if (page.length < 1_000) return counts;
    from = `(${(page[page.length - 1] as [string, string[]])[0]}`;
  }
}

/** What a partitioned processor group has not applied yet on a stream (see `unprocessed`). */
export interface Unprocessed {
  /** Entries after their partition's cursor (before the group has prepared the stream: every entry). */
  readonly unapplied: number;
  /** Entries pending in the group: nobody reads through it any more, so 0 (old consumers' entries are acked on adoption). */
  readonly pending: number;
}

/** Both 0 means every entry of the stream is applied or dead-lettered by the group's partitions. */
export async function unprocessed(
  redis: Redis,
  stream: string,
  group: string,
  snapshots: Pick<SnapshotStore<unknown>, 'cursor'>,
  subjectFields: readonly string[],
): Promise<Unprocessed> {
  const count = await redis.get(partitionKeys.count(stream, group));
  if (count === null) return { unapplied: await redis.xlen(stream), pending: 0 };
  const unapplied = (await unappliedPerPartition(redis, snapshots, stream, Number(count), subjectFields)).reduce(
    (a, b) => a + b,
    0,
  );
  const pending = await redis.xpending(stream, group).then(
    (summary) => Number(summary[0] ?? 0),
    () => Number.NaN,
  );
  return { unapplied, pending };
}

/**
 * Every partition's cursor at its stream's last entry: the processors have nothing left to write,
 * not even an idle partition's cursor (written once a read finds nothing new). Wait for it before
 * comparing every key of the projection at two moments.
 */
export async function cursorsAtEnd(
  redis: Redis,
  snapshots: Pick<SnapshotStore<unknown>, 'cursor'>,
  streams: readonly string[],
  partitions: number,
): Promise<boolean> {
  for (const stream of streams) {
    const last = (await redis.xrevrange(stream, '+', '-', 'COUNT', 1))[0]?.[0] ?? '0-0';
    for (let p = 0; p < partitions; p++) if ((await snapshots.cursor(stream, p)) !== last) return false;
  }
  return true;
}
