import type { WaitingOnRedis } from './redis-wait.ts';

/** What one processor has done on one stream since it started. */
export interface StreamStats {
  applied: number;
  skipped: number;
  deadLettered: number;
  batches: number;
  /** Partitions of this stream this processor took since it started. */
  claimed: number;
  /** Apply calls refused in part because an earlier entry was not applied yet (`blockedAt`): waits on another processor's entries. */
  blocked: number;
  totalBatchMs: number;
  lastBatchMs: number;
  lastError: string | undefined;
  lastErrorAt: number | undefined;
  /** Set while processing of the stream waits for Redis to accept writes again (and why). */
  waiting?: WaitingOnRedis | undefined;
}

export const emptyStreamStats = (): StreamStats => ({
  applied: 0,
  skipped: 0,
  deadLettered: 0,
  batches: 0,
  claimed: 0,
  blocked: 0,
  totalBatchMs: 0,
  lastBatchMs: 0,
  lastError: undefined,
  lastErrorAt: undefined,
});
