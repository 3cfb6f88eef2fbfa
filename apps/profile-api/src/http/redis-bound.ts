import { setTimeout as sleep } from 'node:timers/promises';
import { ApiError } from './errors.ts';

/**
 * How long a request waits on Redis. While Redis is away ioredis holds a command through its
 * reconnect attempts (several seconds); a reader is better served by a 503 and Retry-After at once.
 */
export const REDIS_WAIT_MS = 1_000;

/** Redis did not answer a request's read within REDIS_WAIT_MS: the error handler answers 503 RS_UNAVAILABLE. */
export class RedisWaitError extends ApiError {
  constructor(ms: number) {
    super('unavailable', `Redis did not answer within ${ms} ms; retry shortly.`);
  }
}

/** The read's result, or RedisWaitError once `ms` pass first; the read's own later failure is dropped. */
export async function withinRedisWait<T>(read: Promise<T>, ms = REDIS_WAIT_MS): Promise<T> {
  const timer = new AbortController();
  const late = sleep(ms, undefined, { signal: timer.signal }).then(() => {
    throw new RedisWaitError(ms);
  });
  late.catch(() => undefined);
  try {
    return await Promise.race([read, late]);
  } finally {
    timer.abort();
    read.catch(() => undefined);
  }
}

/** `read` bounded by withinRedisWait on every call. */
export function boundedRead<A extends unknown[], T>(read: (...args: A) => Promise<T>, ms = REDIS_WAIT_MS): (...args: A) => Promise<T> {
  return (...args) => withinRedisWait(read(...args), ms);
}
