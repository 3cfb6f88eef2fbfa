import { setTimeout as sleep } from 'node:timers/promises';
import { EventStoreError, type EventCodec, type StreamEntry } from '@redsource/event-store';
import { encodeMutations, SnapshotStoreError, type BatchEntry, type SnapshotStore } from '@redsource/snapshot-store';
import type { HandlerRegistry } from './handlers.ts';
import type { Logger } from './logger.ts';

export interface BuildOptions {
  /** Delivery count per entry id (from XPENDING) for redelivered entries; fresh entries count 1. */
  readonly deliveries?: ReadonlyMap<string, number>;
  /** Cuts handler retries short: the entry is left unapplied (and pending) for a later delivery. */
  readonly signal?: AbortSignal;
  /** Called for each entry that cannot be applied. */
  readonly onBad?: (entryId: string, reason: string) => void;
}

export interface BuilderSettings {
  readonly maxDeliveries: number;
  readonly retryBackoffMs: number;
}

const MAX_BACKOFF_MS = 5_000;

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
  ) {}

  async build(stream: string, entries: readonly StreamEntry[], options: BuildOptions = {}): Promise<BatchEntry[]> {
    const batch: BatchEntry[] = [];
    for (const entry of entries) batch.push(await this.buildOne(stream, entry, options));
    return batch;
  }

  private async buildOne(stream: string, entry: StreamEntry, options: BuildOptions): Promise<BatchEntry> {
    const deadLetter = (reason: string): BatchEntry => {
      options.onBad?.(entry.id, reason);
      this.logger.warn({ stream, entryId: entry.id, reason }, 'entry cannot be applied: dead-lettering it');
      return { entryId: entry.id, deadLetter: { reason, fields: entry.fields } };
    };
    const event = this.codec.tryDecode(stream, entry.id, entry.fields);
    if (event instanceof EventStoreError) return deadLetter(`${event.code}: ${event.message}`);

    let attempt = options.deliveries?.get(entry.id) ?? 1;
    if (attempt > this.settings.maxDeliveries) {
      return deadLetter(`RS_DELIVERIES_EXHAUSTED: delivered ${attempt} times without being applied (max ${this.settings.maxDeliveries})`);
    }
    for (;;) {
      try {
        const changes = await this.handlers.run(event);
        // Check the changes here, so one bad change dead-letters its entry instead of failing the whole batch.
        for (const change of changes) {
          this.snapshots.key(change.snapshotId);
          encodeMutations(change.mutations, []);
        }
        return { entryId: entry.id, changes };
      } catch (error) {
        const message = error instanceof Error ? error.message : String(error);
        if (error instanceof SnapshotStoreError) return deadLetter(`${error.code}: ${message}`);
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
