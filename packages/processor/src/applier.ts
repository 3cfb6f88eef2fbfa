import { setTimeout as sleep } from 'node:timers/promises';
import type { ApplyBatchInput, BatchEntry, SnapshotStore } from '@redsource/snapshot-store';
import { compareEntryIds } from '@redsource/snapshot-store';
import type { HandlerAttempts } from './attempts.ts';
import type { Logger } from './logger.ts';
import { GAVE_UP, untilRedisAccepts, type RedisWaits } from './redis-wait.ts';
import type { StreamStats } from './stats.ts';

export interface ApplierSettings {
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
 * Applies built batches of a partition through the apply script. While a rebuild holds the stream
 * (switching the snapshots over) the batch waits and is sent again.
 *
 * When Redis refuses the apply (out of memory, read-only, a lost connection...) the same batch is
 * sent again with capped backoff until Redis takes it: never thrown back to the read loop, whose
 * re-reads would only make the entries look like poison. The refusal comes before the script's
 * first write (its #!lua shebang), and a retry of a batch that did run is recognised by the cursor.
 */
export class Applier {
  constructor(
    private readonly snapshots: SnapshotStore<unknown>,
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
      await this.attempts?.forget(
        stream,
        remaining.slice(0, result.handled).map((e) => e.entryId),
      );
      remaining = remaining.slice(result.handled);
      // Held by a rebuild's switch-over: wait, even for an empty batch (its cursor move counts too).
      if (!result.held && (remaining.length === 0 || result.blockedAt === undefined)) break;
      again = options.partition !== undefined;
      options.stats.blocked++;
      if (outOfTime()) return { applied, skipped, deadLettered, complete: false };
      await sleep(pause);
      pause = Math.min(pause * 2, 4);
    }
    return { applied, skipped, deadLettered, complete: true };
  }

  /** Sends a batch until Redis takes it; the stream's stats say why it waits meanwhile. */
  private untilAccepted<T>(stream: string, command: () => Promise<T>, stats: StreamStats, giveUp: () => boolean) {
    return untilRedisAccepts(command, {
      waits: this.waits,
      source: stream,
      giveUp,
      onWait: (wait, error, started) => {
        // Said once per wait (and per change of reason); the client's own wording is for debug.
        this.logger.debug(
          { stream, err: error instanceof Error ? error.message : String(error) },
          'apply refused by Redis',
        );
        if (started)
          this.logger.warn(
            { stream, waiting: wait.reason },
            'Redis refuses the apply; retrying the same batch until it accepts',
          );
        stats.lastError = `waiting on Redis: ${wait.reason}`;
        stats.lastErrorAt = Date.now();
      },
    });
  }
}

function record(
  stats: StreamStats,
  result: { applied: number; skipped: number; deadLettered: number },
  elapsedMs: number,
): void {
  stats.applied += result.applied;
  stats.skipped += result.skipped;
  stats.deadLettered += result.deadLettered;
  if (elapsedMs > 0) {
    stats.batches++;
    stats.totalBatchMs += elapsedMs;
    stats.lastBatchMs = elapsedMs;
  }
}
