import { setTimeout as sleep } from 'node:timers/promises';
import { describeRedisUnavailable, redisUnavailableKind, type RedisUnavailableKind } from '@redsource/event-store';

/** Why a processor waits on Redis: what `status`, `/metrics`, `/readyz` and the dashboard show. */
export interface WaitingOnRedis {
  readonly kind: RedisUnavailableKind;
  /** One line for an operator, e.g. `OOM: Redis is out of memory (maxmemory reached, no eviction)`. */
  readonly reason: string;
  /** Since when (ms since epoch). */
  readonly since: number;
}

/** Retries of a command Redis refused start here and double up to the cap (ms): recovery is seen within a second. */
const FIRST_RETRY_MS = 25;
const MAX_RETRY_MS = 1_000;

/**
 * What this processor waits on Redis for, by source (a stream's apply, the read loop, the claim
 * loop). A source is set while its command is refused and cleared as soon as Redis accepts it.
 */
export class RedisWaits {
  private readonly active = new Map<string, WaitingOnRedis>();

  /**
   * Records that `source` waits because of `error`: 'new' when it did not wait, or waited for another
   * reason (worth a warning), 'same' while the wait goes on (worth a debug line at most), undefined
   * (nothing recorded) when the error is not Redis being unavailable.
   */
  note(source: string, error: unknown): 'new' | 'same' | undefined {
    const kind = redisUnavailableKind(error);
    if (kind === undefined) return undefined;
    const current = this.active.get(source);
    if (current?.kind === kind) return 'same';
    // A script Redis cannot load while it refuses writes (OOM, READONLY...) comes back NOSCRIPT on the
    // next try: a consequence of the refusal under way, which stays the reason shown.
    if (current && kind === 'NOSCRIPT') return 'same';
    this.active.set(source, {
      kind,
      reason: `${kind}: ${describeRedisUnavailable(kind)}`,
      since: current?.since ?? Date.now(),
    });
    return 'new';
  }

  clear(source: string): void {
    this.active.delete(source);
  }

  get(source: string): WaitingOnRedis | undefined {
    return this.active.get(source);
  }

  /** The longest wait under way, if any. */
  oldest(): WaitingOnRedis | undefined {
    let oldest: WaitingOnRedis | undefined;
    for (const wait of this.active.values()) if (!oldest || wait.since < oldest.since) oldest = wait;
    return oldest;
  }
}

/** Returned by untilRedisAccepts when `giveUp` said so before Redis accepted the command. */
export const GAVE_UP = Symbol('gave up waiting on Redis');

/**
 * Runs `command` until Redis accepts it: a refusal (OOM, READONLY, MISCONF, BUSY, LOADING, NOSCRIPT,
 * a lost connection: see redisUnavailableKind) is waited out with capped backoff, recorded in
 * `waits` under `source` meanwhile; any other error clears that and is thrown. Only for commands that are safe to
 * repeat: a command whose reply was lost may have run.
 */
export async function untilRedisAccepts<T>(
  command: () => Promise<T>,
  options: {
    readonly waits: RedisWaits;
    readonly source: string;
    readonly giveUp?: () => boolean;
    /** Each refusal; `started` is true for the first of a wait (or when its reason changes). */
    readonly onWait?: (wait: WaitingOnRedis, error: unknown, started: boolean) => void;
  },
): Promise<T | typeof GAVE_UP> {
  let delay = FIRST_RETRY_MS;
  for (;;) {
    try {
      const result = await command();
      options.waits.clear(options.source);
      return result;
    } catch (error) {
      const noted = options.waits.note(options.source, error);
      if (noted === undefined) {
        // Redis answered (RS_PARTITION_LOST, a handler's data refused...): nothing waits on it any
        // more, even if this source never sends another command (its partitions moved on).
        options.waits.clear(options.source);
        throw error;
      }
      options.onWait?.(options.waits.get(options.source) as WaitingOnRedis, error, noted === 'new');
      if (options.giveUp?.()) return GAVE_UP;
      await sleep(delay);
      delay = Math.min(delay * 2, MAX_RETRY_MS);
    }
  }
}
