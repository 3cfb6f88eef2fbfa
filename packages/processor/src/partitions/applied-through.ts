import { readFileSync } from 'node:fs';
import type { Redis, Result } from 'ioredis';
import type { SnapshotStore } from '@redsource/snapshot-store';
import { partitionKeys } from './keys.ts';
import { partitionOfSubject } from './subject.ts';

declare module 'ioredis' {
  interface RedisCommander<Context> {
    redsourceAppliedThrough(stream: string, cursor: string, partitionStream: string, group: string, entryId: string): Result<[number, string], Context>;
  }
}

const appliedThroughSource = readFileSync(new URL('../scripts/applied-through-3.lua', import.meta.url), 'utf8');

export interface AppliedThrough {
  /** Every entry of the stream up to the id that concerns the subject is applied. */
  readonly applied: boolean;
  /** The subject's partition's cursor: what it is applied up to. */
  readonly cursor: string;
}

/**
 * Read your writes on a partitioned projection: whether a subject's snapshot reflects a stream up
 * to an entry id (an entry its client appended), in one read-only script call.
 */
export class AppliedPositions {
  constructor(
    private readonly redis: Redis,
    private readonly snapshots: Pick<SnapshotStore<unknown>, 'cursorKey'>,
    private readonly partitioning: { readonly group: string; readonly partitions: number },
  ) {
    if (typeof (redis as Partial<Redis>).redsourceAppliedThrough !== 'function') {
      redis.defineCommand('redsourceAppliedThrough', { numberOfKeys: 3, lua: appliedThroughSource });
    }
  }

  async through(stream: string, subject: string, entryId: string): Promise<AppliedThrough> {
    const { group, partitions } = this.partitioning;
    const partition = partitionOfSubject(subject, partitions);
    const [applied, cursor] = await this.redis.redsourceAppliedThrough(
      stream,
      this.snapshots.cursorKey(stream, partition),
      partitionKeys.stream(stream, group, partition),
      group,
      entryId,
    );
    return { applied: applied === 1, cursor };
  }
}
