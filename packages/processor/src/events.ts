import type { EventEmitter } from 'node:events';
import type { StreamEntry } from '@redsource/event-store';
import type { BatchEntry } from '@redsource/snapshot-store';
import type { ApplyOutcome } from './applier.ts';
import type { ProcessorLoopError } from './errors.ts';
import type { PartitionUnit } from './partitions/ownership.ts';

/** One batch of one partition of one stream, applied (`processor.on('batch', …)`). */
export interface BatchEvent {
  readonly stream: string;
  readonly partition: number;
  /** Entries read in this batch, and the first and last of their ids. */
  readonly count: number;
  readonly firstEntryId: string;
  readonly lastEntryId: string;
  readonly applied: number;
  /** Applied before (read again after a restart or a takeover): not applied twice. */
  readonly skipped: number;
  readonly deadLettered: number;
  /** From the read reply to the apply's answer, handler retries included (ms). */
  readonly durationMs: number;
}

/** An entry the processor could not apply and sent to the dead-letter stream (`processor.on('deadLetter', …)`). */
export interface DeadLetterEvent {
  readonly stream: string;
  readonly partition: number;
  readonly entryId: string;
  /** `<code>: <message>`, as in the dead letter (`RS_HANDLER_FAILED: …`, `RS_EVENT_INVALID: …`). */
  readonly reason: string;
}

/** The partitions of streams this processor holds changed (`processor.on('partitionsChanged', …)`). */
export interface PartitionsChangedEvent {
  /** Held now, after the change (draining ones included until they are given back), by stream, then partition. */
  readonly held: readonly PartitionUnit[];
  /** Taken by this processor in this change. */
  readonly taken: readonly PartitionUnit[];
  /** Beyond its fair share (a processor joined): given back once their batch in hand is applied. */
  readonly draining: readonly PartitionUnit[];
  /** Given back to the group. */
  readonly released: readonly PartitionUnit[];
  /** Lost: the lease ran out or another processor holds it now. */
  readonly lost: readonly PartitionUnit[];
}

/**
 * What a `StreamProcessor` emits. Each is emitted only while someone listens, so an unobserved
 * processor builds no event objects; `error` in particular never throws for want of a listener
 * (unlike a plain EventEmitter): the loops retry regardless and say so in the log and `stats()`.
 */
export interface ProcessorEvents {
  /** Once: the consumer groups exist, the first ownership round took this processor's share (every stream prepared first). */
  ready: [];
  batch: [BatchEvent];
  deadLetter: [DeadLetterEvent];
  partitionsChanged: [PartitionsChangedEvent];
  /** A loop (read, ownership) failed and retries with backoff. */
  error: [ProcessorLoopError];
}

/**
 * Emits `batch` and, for a batch applied to its end, `deadLetter` for each entry it dead-lettered
 * (decided when the batch was built). Called only while one of them has a listener.
 */
export function reportBatch(
  processor: EventEmitter<ProcessorEvents>,
  applied: {
    readonly stream: string;
    readonly partition: number;
    readonly entries: readonly StreamEntry[];
    readonly batch: readonly BatchEntry[];
    readonly outcome: ApplyOutcome;
    readonly durationMs: number;
  },
): void {
  const { stream, partition, entries, batch, outcome } = applied;
  if (processor.listenerCount('batch') > 0) {
    processor.emit('batch', {
      stream,
      partition,
      count: entries.length,
      firstEntryId: entries[0]?.id ?? '',
      lastEntryId: entries[entries.length - 1]?.id ?? '',
      applied: outcome.applied,
      skipped: outcome.skipped,
      deadLettered: outcome.deadLettered,
      durationMs: applied.durationMs,
    });
  }
  if (!outcome.complete || processor.listenerCount('deadLetter') === 0) return;
  for (const entry of batch)
    if ('deadLetter' in entry)
      processor.emit('deadLetter', { stream, partition, entryId: entry.entryId, reason: entry.deadLetter.reason });
}
