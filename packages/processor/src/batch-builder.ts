import { setTimeout as sleep } from 'node:timers/promises';
import { EventStoreError, type EventCodec, type RecordedEvent, type StreamEntry } from '@redsource/event-store';
import {
  checkMutations,
  SnapshotStoreError,
  type BatchEntry,
  type SnapshotChange,
  type SnapshotStore,
} from '@redsource/snapshot-store';
import type { HandlerAttempts } from './attempts.ts';
import type { HandlerRegistry } from './handlers.ts';
import { mayBeNotUtf8, notUtf8 } from './not-utf8.ts';
import type { Logger } from './logger.ts';

export interface BuildOptions {
  /** Cuts handler retries short: the entry is left unapplied (and pending) for a later delivery. */
  readonly signal?: AbortSignal;
  /** Called for each entry that cannot be applied; given, it replaces the builder's warning (the caller reports such entries). */
  readonly onBad?: (entryId: string, reason: string) => void;
}

export interface BuilderSettings {
  readonly maxDeliveries: number;
  readonly retryBackoffMs: number;
}

const MAX_BACKOFF_MS = 5_000;

/** What a failed handler attempt threw. */
interface Failure {
  readonly failure: unknown;
}

/**
 * Turns raw entries into what the apply script takes: decoded, folded by their handler into
 * snapshot changes, or marked for the dead-letter stream with the reason.
 */
export class BatchBuilder {
  constructor(
    private readonly codec: EventCodec,
    private readonly handlers: HandlerRegistry,
    private readonly snapshots: SnapshotStore<unknown>,
    private readonly settings: BuilderSettings,
    private readonly logger: Logger,
    /** Where failed attempts are counted across processes and restarts; without it (a replay), per build call. */
    private readonly attempts?: HandlerAttempts,
  ) {}

  async build(stream: string, entries: readonly StreamEntry[], options: BuildOptions = {}): Promise<BatchEntry[]> {
    const batch: BatchEntry[] = [];
    for (const entry of entries) {
      const event =
        (mayBeNotUtf8(entry) && (await notUtf8(this.snapshots.redis, stream, entry))) ||
        this.codec.tryDecode(stream, entry.id, entry.fields);
      if (event instanceof EventStoreError) {
        batch.push(await this.buildOne(stream, entry, event, options, undefined));
        continue;
      }
      // The common case (a synchronous handler that does not throw) costs no promise.
      let first = this.firstAttempt(entry, event);
      if (first instanceof Promise) first = await first;
      batch.push('failure' in first ? await this.buildOne(stream, entry, event, options, first) : first);
    }
    return batch;
  }

  private firstAttempt(entry: StreamEntry, event: RecordedEvent): BatchEntry | Failure | Promise<BatchEntry | Failure> {
    try {
      const result = this.handlers.run(event);
      // No closure per entry on the common, synchronous path.
      if (!(result instanceof Promise)) return this.accept(entry, result);
      return result.then((changes) => this.accept(entry, changes)).catch((failure: unknown) => ({ failure }));
    } catch (failure) {
      return { failure };
    }
  }

  private accept(entry: StreamEntry, changes: readonly SnapshotChange[]): BatchEntry {
    this.check(changes);
    return { entryId: entry.id, changes };
  }

  /** One bad change dead-letters its entry instead of failing the whole batch: checked here. */
  private check(changes: readonly SnapshotChange[]): void {
    for (const change of changes) {
      this.snapshots.key(change.snapshotId);
      checkMutations(change.mutations);
    }
  }

  /** The slow way: dead-lettering, and retries with backoff after a failed attempt. */
  private async buildOne(
    stream: string,
    entry: StreamEntry,
    event: RecordedEvent | EventStoreError,
    options: BuildOptions,
    firstAttempt: Failure | undefined,
  ): Promise<BatchEntry> {
    const deadLetter = (reason: string): BatchEntry => {
      if (options.onBad) options.onBad(entry.id, reason);
      else this.logger.warn({ stream, entryId: entry.id, reason }, 'entry cannot be applied: dead-lettering it');
      return { entryId: entry.id, deadLetter: { reason, fields: entry.fields } };
    };
    if (event instanceof EventStoreError) return deadLetter(`${event.code}: ${event.message}`);

    // Only this entry's own failures count (see HandlerAttempts): not how often Redis delivered it.
    let attempt = 1;
    let failed = firstAttempt;
    for (;;) {
      try {
        if (failed) throw failed.failure;
        const changes = await this.handlers.run(event);
        this.check(changes);
        return { entryId: entry.id, changes };
      } catch (error) {
        failed = undefined;
        const message = error instanceof Error ? error.message : String(error);
        if (error instanceof SnapshotStoreError) return deadLetter(`${error.code}: ${message}`);
        if (this.attempts) {
          const total = await this.attempts.failed(stream, entry.id, () => options.signal?.aborted === true);
          // Stopping while Redis refused to count it: the entry stays pending for a later delivery.
          if (total === undefined) throw new DOMException('stopped while counting a failed attempt', 'AbortError');
          attempt = total;
        }
        if (attempt >= this.settings.maxDeliveries) {
          return deadLetter(`RS_HANDLER_FAILED: handler for '${event.type}' failed ${attempt} times, last: ${message}`);
        }
        const delay = Math.min(this.settings.retryBackoffMs * 2 ** (attempt - 1), MAX_BACKOFF_MS);
        this.logger.warn({ stream, entryId: entry.id, attempt, delay, err: message }, 'handler failed; retrying');
        await sleep(delay, undefined, options.signal ? { signal: options.signal } : {});
        attempt++;
      }
    }
  }
}
