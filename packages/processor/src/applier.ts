import { setTimeout as sleep } from 'node:timers/promises';
import type { RedisEventStore } from '@redsource/event-store';
import type { BatchEntry, SnapshotStore } from '@redsource/snapshot-store';
import { compareEntryIds } from '@redsource/snapshot-store';
import type { BatchBuilder } from './batch-builder.ts';
import type { Logger } from './logger.ts';
import type { StreamStats } from './stats.ts';

export interface ApplierSettings {
  readonly gapFillAfterMs: number;
  readonly shutdownTimeoutMs: number;
}

export interface ApplyOutcome {
  readonly applied: number;
  readonly skipped: number;
  readonly deadLettered: number;
  /** False when stopping cut the wait short: the unhandled entries stay pending for a later delivery. */
  readonly complete: boolean;
}

/**
 * Applies built batches through the apply script. When an earlier entry of the stream is still
 * held by another consumer the batch waits; if the wait outlasts gapFillAfterMs (the holder may be
 * dead or stalled), it applies the missing entries itself, straight from the stream. Exactly-once
 * holds either way: the script's cursor lets only one application of each entry through.
 */
export class Applier {
  constructor(
    private readonly store: RedisEventStore,
    private readonly snapshots: SnapshotStore<unknown>,
    private readonly builder: BatchBuilder,
    private readonly settings: ApplierSettings,
    private readonly deadLetterStream: (stream: string) => string,
    private readonly logger: Logger,
  ) {}

  async apply(
    stream: string,
    batch: readonly BatchEntry[],
    options: { ackGroup?: string; contiguous?: boolean; stats: StreamStats; stopRequestedAt: () => number | undefined },
  ): Promise<ApplyOutcome> {
    let remaining = [...batch].sort((a, b) => compareEntryIds(a.entryId, b.entryId));
    let applied = 0;
    let skipped = 0;
    let deadLettered = 0;
    let blockedSince: number | undefined;
    let pause = 1;
    while (remaining.length > 0) {
      const started = performance.now();
      const result = await this.snapshots.applyBatch({
        stream,
        entries: remaining,
        deadLetterStream: this.deadLetterStream(stream),
        contiguous: options.contiguous === true,
        ...(options.ackGroup === undefined ? {} : { ackGroup: options.ackGroup }),
      });
      const elapsed = performance.now() - started;
      record(options.stats, result, elapsed);
      applied += result.applied;
      skipped += result.skipped;
      deadLettered += result.deadLettered;
      remaining = remaining.slice(result.handled);
      if (remaining.length === 0 || result.blockedAt === undefined) break;

      const now = Date.now();
      blockedSince ??= now;
      const stopAt = options.stopRequestedAt();
      if (stopAt !== undefined && now - stopAt >= this.settings.shutdownTimeoutMs) {
        return { applied, skipped, deadLettered, complete: false };
      }
      if (!result.held && now - blockedSince >= this.settings.gapFillAfterMs) {
        this.logger.info({ stream, from: result.cursor, to: result.blockedAt }, 'filling a gap from the stream');
        const filled = await this.fillGap(stream, result.cursor, result.blockedAt, options.stats);
        applied += filled.applied;
        deadLettered += filled.deadLettered;
        blockedSince = undefined;
      } else {
        await sleep(pause);
        pause = Math.min(pause * 2, 4);
      }
    }
    return { applied, skipped, deadLettered, complete: true };
  }

  /** Applies the entries after `cursor` and before `until` from the stream itself (no ack: their holder acks them). */
  private async fillGap(stream: string, cursor: string, until: string, stats: StreamStats) {
    let applied = 0;
    let deadLettered = 0;
    for await (const page of this.store.readPages(stream, { from: `(${cursor}`, to: `(${until}`, pageSize: 500 })) {
      const batch = await this.builder.build(stream, page, {});
      const result = await this.snapshots.applyBatch({ stream, entries: batch, deadLetterStream: this.deadLetterStream(stream), contiguous: true });
      record(stats, result, 0);
      applied += result.applied;
      deadLettered += result.deadLettered;
      if (result.blockedAt !== undefined) break;
    }
    return { applied, deadLettered };
  }
}

function record(stats: StreamStats, result: { applied: number; skipped: number; deadLettered: number }, elapsedMs: number): void {
  stats.applied += result.applied;
  stats.skipped += result.skipped;
  stats.deadLettered += result.deadLettered;
  if (elapsedMs > 0) {
    stats.batches++;
    stats.totalBatchMs += elapsedMs;
    stats.lastBatchMs = elapsedMs;
  }
}
