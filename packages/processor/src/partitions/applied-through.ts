import type { Redis } from 'ioredis';
import { compareEntryIds, type SnapshotStore } from '@redsource/snapshot-store';
import { PartitionFinder } from './subject.ts';

export interface AppliedThrough {
  /** Every entry of the stream up to the id that concerns the subject is applied. */
  readonly applied: boolean;
  /** The subject's partition's cursor: what it is applied up to. */
  readonly cursor: string;
}

export interface AppliedPositionsPartitioning {
  readonly group: string;
  readonly partitions: number;
  /**
   * The subject fields of each stream (the catalog's): with them, a partition whose cursor is
   * behind the id but has no entry of its own in between counts as applied. Without them, only
   * the cursor answers (an idle partition's cursor follows within about a second).
   */
  readonly subjectFields?: (stream: string) => readonly string[];
}

/** Entries between a partition's cursor and the id looked at, at most, before answering "not yet". */
const LOOK_AHEAD = 200;

/**
 * Read your writes on a partitioned projection: whether a subject's snapshot reflects a stream up
 * to an entry id (an entry its client appended). Plain reads in one round trip, all in the
 * stream's slot, so a read-only ACL user may ask: the subject's partition's cursor (every entry of
 * the partition up to it is applied), the stream's last entry, and the entries after the cursor up
 * to the id. Applied when the cursor has passed the id, or when none of the entries in between is
 * the partition's (the cursor of an idle partition moves now and then, not at every read). Every
 * input only moves forward, so the answer may be late, never early.
 */
export class AppliedPositions {
  private readonly finder: PartitionFinder | undefined;

  constructor(
    private readonly redis: Redis,
    private readonly snapshots: Pick<SnapshotStore<unknown>, 'cursorKey'>,
    private readonly partitioning: AppliedPositionsPartitioning,
  ) {
    this.finder =
      partitioning.subjectFields && new PartitionFinder(partitioning.partitions, partitioning.subjectFields);
  }

  async through(stream: string, subject: string, entryId: string): Promise<AppliedThrough> {
    const finder = this.finder ?? new PartitionFinder(this.partitioning.partitions, () => []);
    const partition = finder.subject(subject);
    const cursorKey = this.snapshots.cursorKey(stream, partition);
    if (!this.finder) {
      const cursor = (await this.redis.get(cursorKey)) ?? '0-0';
      return { applied: compareEntryIds(cursor, entryId) >= 0, cursor };
    }
    // The cursor first: the entries read after it are then at least as new as what it says.
    const cursor = (await this.redis.get(cursorKey)) ?? '0-0';
    if (compareEntryIds(cursor, entryId) >= 0) return { applied: true, cursor };
    const replies =
      (await this.redis
        .pipeline()
        .xrevrange(stream, '+', '-', 'COUNT', 1)
        .xrange(stream, `(${cursor}`, entryId, 'COUNT', LOOK_AHEAD)
        .exec()) ?? [];
    const [lastReply, betweenReply] = replies;
    if (lastReply?.[0]) throw lastReply[0];
    if (betweenReply?.[0]) throw betweenReply[0];
    const last = (lastReply?.[1] as [string, string[]][])[0]?.[0];
    // An id the stream has not reached yet: nothing of it can be applied.
    if (last === undefined || compareEntryIds(last, entryId) < 0) return { applied: false, cursor };
    const between = betweenReply?.[1] as [string, string[]][];
    if (between.length >= LOOK_AHEAD) return { applied: false, cursor };
    const pending = between.some(([, fields]) => finder.entry(stream, fields) === partition);
    return { applied: !pending, cursor };
  }
}
