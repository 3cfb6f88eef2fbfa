import type { Redis } from 'ioredis';
import { processorKeys } from './keys.ts';
import type { Logger } from './logger.ts';
import { GAVE_UP, untilRedisAccepts, type RedisWaits } from './redis-wait.ts';

/**
 * Failed handler attempts per entry, kept in Redis (a hash per stream and group) so they add up
 * across restarts, claims and gap fills: REDSOURCE_MAX_DELIVERIES counts these, never how often
 * Redis handed the entry out (XPENDING's delivery count grows with every re-read and claim, which
 * says nothing about the entry). Only failures are written, so the usual path costs nothing.
 */
export class HandlerAttempts {
  /** Entry ids with a count in Redis, per stream: forgotten once their entry is handled. */
  private readonly counted = new Map<string, Set<string>>();

  constructor(
    private readonly redis: Redis,
    private readonly group: string,
    private readonly waits: RedisWaits,
    private readonly logger: Logger,
  ) {}

  /**
   * Adds one failed attempt and returns the entry's total. Waits while Redis refuses the write: the
   * decision to dead-letter must rest on the count. `giveUp` (stopping) ends the wait: the attempt
   * is then not counted and the entry stays pending.
   */
  async failed(stream: string, entryId: string, giveUp: () => boolean): Promise<number | undefined> {
    const key = processorKeys.attempts(stream, this.group);
    // MULTI: under OOM or READONLY Redis refuses the whole transaction at EXEC, so the TTL never lags the count.
    const total = await untilRedisAccepts(
      async () => {
        const replies = (await this.redis.multi().hincrby(key, entryId, 1).pexpire(key, ATTEMPTS_TTL_MS).exec()) ?? [];
        const [error, count] = replies[0] ?? [new Error('no reply to HINCRBY')];
        if (error) throw error;
        return Number(count);
      },
      { waits: this.waits, source: stream, giveUp },
    );
    if (total === GAVE_UP) return undefined;
    let ids = this.counted.get(stream);
    if (!ids) this.counted.set(stream, (ids = new Set()));
    ids.add(entryId);
    return total;
  }

  /** Drops the counts of handled entries (applied, skipped or dead-lettered). */
  async forget(stream: string, handledIds: readonly string[]): Promise<void> {
    const ids = this.counted.get(stream);
    if (!ids || ids.size === 0) return;
    const done = handledIds.filter((id) => ids.has(id));
    if (done.length === 0) return;
    for (const id of done) ids.delete(id);
    // HDEL is allowed under OOM; if Redis refuses it anyway, the key's TTL clears what is left.
    await this.redis.hdel(processorKeys.attempts(stream, this.group), ...done).catch((error: unknown) =>
      this.logger.debug({ stream, err: String(error) }, 'attempt counts not cleared; their TTL will'),
    );
  }
}

/**
 * A backstop for counts a crash left behind: the hash expires a week after its last failure. A
 * failing entry keeps it alive, and an entry is retried within minutes (backoff is capped at 5 s).
 */
const ATTEMPTS_TTL_MS = 7 * 24 * 3_600_000;
