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
  /**
   * Per stream: whether the group's attempts hash may hold a count (this process counted a failure,
   * entries of another consumer were claimed, or the last look found the hash), and when that was
   * last looked at. Any process may apply an entry another counted, so handled ids are forgotten
   * whoever counted them; while the hash is empty a batch costs no round trip (a look at most once
   * a second per stream).
   */
  private readonly mayHold = new Map<string, { yes: boolean; checkedAt: number }>();

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
    this.mayHaveCounts(stream);
    return total;
  }

  /** Entries counted elsewhere may come next (claimed from another consumer): look at the hash with the next batch. */
  mayHaveCounts(stream: string): void {
    this.mayHold.set(stream, { yes: true, checkedAt: Date.now() });
  }

  /** Drops the counts of handled entries (applied, skipped or dead-lettered), whichever process counted them. */
  async forget(stream: string, handledIds: readonly string[]): Promise<void> {
    if (handledIds.length === 0) return;
    const state = this.mayHold.get(stream);
    const now = Date.now();
    if (state && !state.yes && now - state.checkedAt < RECHECK_MS) return;
    const key = processorKeys.attempts(stream, this.group);
    // HDEL is allowed under OOM; if Redis refuses it anyway, the key's TTL clears what is left.
    try {
      const replies =
        (await this.redis
          .pipeline()
          .hdel(key, ...handledIds)
          .exists(key)
          .exec()) ?? [];
      const [error, exists] = replies[1] ?? [new Error('no reply to EXISTS')];
      if (error) throw error;
      this.mayHold.set(stream, { yes: Number(exists) === 1, checkedAt: now });
    } catch (error) {
      this.logger.debug({ stream, err: String(error) }, 'attempt counts not cleared; their TTL will');
    }
  }
}

/** How long an empty attempts hash is trusted to stay empty before the next look (another process may count meanwhile). */
const RECHECK_MS = 1_000;

/**
 * A backstop for counts a crash left behind: the hash expires a week after its last failure. A
 * failing entry keeps it alive, and an entry is retried within minutes (backoff is capped at 5 s).
 */
const ATTEMPTS_TTL_MS = 7 * 24 * 3_600_000;
