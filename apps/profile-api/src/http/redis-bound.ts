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

/**
 * The read's result, or RedisWaitError once `ms` pass first; the read's own later failure is dropped.
 * A plain timer, cleared when the read settles: this runs on every GET, and an AbortController per
 * request (whose abort builds an AbortError with a stack) cost a visible share of the API's throughput.
 */
export function withinRedisWait<T>(read: Promise<T>, ms = REDIS_WAIT_MS): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => reject(new RedisWaitError(ms)), ms);
    read.then(
      (value) => {
        clearTimeout(timer);
        resolve(value);
      },
      (error: unknown) => {
        clearTimeout(timer);
        // eslint-disable-next-line @typescript-eslint/prefer-promise-reject-errors -- the read's own rejection, passed on unchanged
        reject(error);
      },
    );
  });
}

/** `read` bounded by withinRedisWait on every call. */
export function boundedRead<A extends unknown[], T>(
  read: (...args: A) => Promise<T>,
  ms = REDIS_WAIT_MS,
): (...args: A) => Promise<T> {
  return (...args) => withinRedisWait(read(...args), ms);
}
