import type { Redis } from 'ioredis';
import { compareEntryIds, type SnapshotStore } from '@redsource/snapshot-store';
import { toObject } from '../replies.ts';
import { partitionKeys } from './keys.ts';
import { partitionOfSubject } from './subject.ts';

export interface AppliedThrough {
  /** Every entry of the stream up to the id that concerns the subject is applied. */
  readonly applied: boolean;
  /** The subject's partition's cursor: what it is applied up to. */
  readonly cursor: string;
}

/**
 * Read your writes on a partitioned projection: whether a subject's snapshot reflects a stream up
 * to an entry id (an entry its client appended). Plain reads in one round trip (all in the stream's
 * slot), so a read-only ACL user may ask: the partition's cursor, how far the group has routed the
 * stream, and the partition's first entries up to the id. Every one of them only moves forward, and
 * the apply trims a partition stream only below its cursor, so the answer may be late, never early.
 */
export class AppliedPositions {
  constructor(
    private readonly redis: Redis,
    private readonly snapshots: Pick<SnapshotStore<unknown>, 'cursorKey'>,
    private readonly partitioning: { readonly group: string; readonly partitions: number },
  ) {}

  async through(stream: string, subject: string, entryId: string): Promise<AppliedThrough> {
    const { group, partitions } = this.partitioning;
    const partition = partitionOfSubject(subject, partitions);
    const replies =
      (await this.redis
        .pipeline()
        .get(this.snapshots.cursorKey(stream, partition))
        .xinfo('GROUPS', stream)
        .xrange(partitionKeys.stream(stream, group, partition), '-', entryId, 'COUNT', 2)
        .exec()) ?? [];
    const [cursorReply, groupsReply, pendingReply] = replies;
    if (cursorReply?.[0]) throw cursorReply[0];
    const cursor = (cursorReply?.[1] as string | null) ?? '0-0';
    if (compareEntryIds(cursor, entryId) >= 0) return { applied: true, cursor };
    // No stream yet (XINFO fails): nothing of it is applied.
    if (groupsReply?.[0]) return { applied: false, cursor };
    const routed = (groupsReply?.[1] as unknown[][]).map(toObject).find((g) => g['name'] === group)?.['last-delivered-id'] as string | undefined;
    if (routed === undefined || compareEntryIds(routed, entryId) < 0) return { applied: false, cursor };
    if (pendingReply?.[0]) throw pendingReply[0];
    // What is left in the partition up to the id: the cursor's own entry (kept by the trim) or unapplied ones.
    const left = (pendingReply?.[1] as [string, string[]][]).filter(([id]) => compareEntryIds(id, cursor) > 0);
    return { applied: left.length === 0, cursor };
  }
}
