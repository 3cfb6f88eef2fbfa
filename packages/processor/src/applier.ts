import { setTimeout as sleep } from 'node:timers/promises';
import type { RedisEventStore } from '@redsource/event-store';
import type { ApplyBatchInput, BatchEntry, SnapshotStore } from '@redsource/snapshot-store';
import { compareEntryIds } from '@redsource/snapshot-store';
import type { HandlerAttempts } from './attempts.ts';
import type { BatchBuilder } from './batch-builder.ts';
import type { Logger } from './logger.ts';
import { GAVE_UP, untilRedisAccepts, type RedisWaits } from './redis-wait.ts';
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
 *
 * When Redis refuses the apply (out of memory, read-only, a lost connection...) the same batch is
 * sent again with capped backoff until Redis takes it: never thrown back to the read loop, whose
 * re-reads would only make the entries look like poison. The refusal comes before the script's
 * first write (its #!lua shebang), and a retry of a batch that did run is recognised by the cursor.
 */
export class Applier {
  constructor(
    private readonly store: RedisEventStore,
    private readonly snapshots: SnapshotStore<unknown>,
    private readonly builder: BatchBuilder,
    private readonly settings: ApplierSettings,
    private readonly deadLetterStream: (stream: string) => string,
    private readonly logger: Logger,
    private readonly waits: RedisWaits,
    private readonly attempts?: HandlerAttempts,
  ) {}

  async apply(
    stream: string,
    batch: readonly BatchEntry[],
    options: {
      ackGroup?: string;
      /** The group a dead letter names (default ackGroup). */
      group?: string;
      contiguous?: boolean;
      stats: StreamStats;
      stopRequestedAt: () => number | undefined;
      /** The entries come from a partition of the stream (see ApplyBatchInput.partition). */
      partition?: ApplyBatchInput['partition'];
      /** A fencing token the writes must hold (see ApplyBatchInput.fence). */
      fence?: ApplyBatchInput['fence'];
    },
  ): Promise<ApplyOutcome> {
    let remaining = [...batch].sort((a, b) => compareEntryIds(a.entryId, b.entryId));
    let applied = 0;
    let skipped = 0;
    let deadLettered = 0;
    let blockedSince: number | undefined;
    let pause = 1;
    const outOfTime = () => {
      const stopAt = options.stopRequestedAt();
      return stopAt !== undefined && Date.now() - stopAt >= this.settings.shutdownTimeoutMs;
    };
    // A partition's batch goes out even when empty: it moves the partition's cursor.
    let again = options.partition !== undefined;
    while (again || remaining.length > 0) {
      again = false;
      const started = performance.now();
      const input = {
        stream,
        entries: remaining,
        deadLetterStream: this.deadLetterStream(stream),
        contiguous: options.contiguous === true,
        ...(options.ackGroup === undefined ? {} : { ackGroup: options.ackGroup }),
        ...(options.group === undefined ? {} : { group: options.group }),
        ...(options.partition === undefined ? {} : { partition: options.partition }),
        ...(options.fence === undefined ? {} : { fence: options.fence }),
      };
      const result = await this.untilAccepted(stream, () => this.snapshots.applyBatch(input), options.stats, outOfTime);
      if (result === GAVE_UP) return { applied, skipped, deadLettered, complete: false };
      const elapsed = performance.now() - started;
      record(options.stats, result, elapsed);
      applied += result.applied;
      skipped += result.skipped;
      deadLettered += result.deadLettered;
      await this.attempts?.forget(stream, remaining.slice(0, result.handled).map((e) => e.entryId));
      remaining = remaining.slice(result.handled);
      // Held by a rebuild's switch-over: wait, even for an empty batch (its cursor move counts too).
      if (!result.held && (remaining.length === 0 || result.blockedAt === undefined)) break;
      again = options.partition !== undefined;
      options.stats.blocked++;

      const now = Date.now();
      blockedSince ??= now;
      if (outOfTime()) return { applied, skipped, deadLettered, complete: false };
      if (!result.held && result.blockedAt !== undefined && now - blockedSince >= this.settings.gapFillAfterMs) {
        this.logger.info({ stream, from: result.cursor, to: result.blockedAt }, 'filling a gap from the stream');
        const filled = await this.fillGap(stream, result.cursor, result.blockedAt, options, outOfTime);
        if (!filled.complete) return { applied, skipped, deadLettered, complete: false };
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

  /** Applies the entries after `cursor` and before `until` from the stream (or partition) itself (no ack: their holder acks them). */
  private async fillGap(
    stream: string,
    cursor: string,
    until: string,
    options: { stats: StreamStats; group?: string; partition?: ApplyBatchInput['partition']; fence?: ApplyBatchInput['fence'] },
    outOfTime: () => boolean,
  ) {
    let applied = 0;
    let deadLettered = 0;
    const stats = options.stats;
    for await (const page of this.store.readPages(stream, { from: `(${cursor}`, to: `(${until}`, pageSize: 500 })) {
      const batch = await this.builder.build(stream, page, {});
      const input = {
        stream,
        entries: batch,
        deadLetterStream: this.deadLetterStream(stream),
        contiguous: true,
        ...(options.group === undefined ? {} : { group: options.group }),
        ...(options.partition === undefined ? {} : { partition: options.partition }),
        ...(options.fence === undefined ? {} : { fence: options.fence }),
      };
      const result = await this.untilAccepted(stream, () => this.snapshots.applyBatch(input), stats, outOfTime);
      if (result === GAVE_UP) return { applied, deadLettered, complete: false };
      record(stats, result, 0);
      applied += result.applied;
      deadLettered += result.deadLettered;
      await this.attempts?.forget(stream, batch.slice(0, result.handled).map((e) => e.entryId));
      if (result.blockedAt !== undefined) break;
    }
    return { applied, deadLettered, complete: true };
  }

  /** Sends a batch until Redis takes it; the stream's stats say why it waits meanwhile. */
  private untilAccepted<T>(stream: string, command: () => Promise<T>, stats: StreamStats, giveUp: () => boolean) {
    return untilRedisAccepts(command, {
      waits: this.waits,
      source: stream,
      giveUp,
      onWait: (wait, error, started) => {
        // Said once per wait (and per change of reason); the client's own wording is for debug.
        this.logger.debug({ stream, err: error instanceof Error ? error.message : String(error) }, 'apply refused by Redis');
        if (started) this.logger.warn({ stream, waiting: wait.reason }, 'Redis refuses the apply; retrying the same batch until it accepts');
        stats.lastError = `waiting on Redis: ${wait.reason}`;
        stats.lastErrorAt = Date.now();
      },
    });
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
