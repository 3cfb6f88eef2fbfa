import { setTimeout as sleep } from 'node:timers/promises';
import { z } from 'zod';
import { ApiError } from './errors.ts';
import { REDIS_WAIT_MS } from './redis-bound.ts';

/** How long a request may wait for the snapshots to catch up, by default and at most. */
export const DEFAULT_WAIT_MS = 2_000;
export const MAX_WAIT_MS = 10_000;
/** Polling starts at this pause and doubles up to the cap: fast for the usual few-ms lag, cheap for a long wait. */
const FIRST_POLL_MS = 2;
const MAX_POLL_MS = 25;
const WAIT_RULE = `wait must be a whole number of milliseconds from 0 to ${MAX_WAIT_MS}`;

/** `<stream>:<entry id>`; a stream name may itself contain `:`, the entry id never does. */
const AFTER = /^(.+):(\d{1,20}-\d{1,20})$/;

export interface After {
  readonly stream: string;
  readonly entryId: string;
}

export function parseAfter(value: string): After | undefined {
  const match = AFTER.exec(value);
  return match?.[1] && match[2] && fitsRedisEntryId(match[2]) ? { stream: match[1], entryId: match[2] } : undefined;
}

/** Redis entry ids are two unsigned 64-bit numbers: a larger part names no entry Redis could ever hold. */
const MAX_ID_PART = 2n ** 64n - 1n;
function fitsRedisEntryId(entryId: string): boolean {
  return entryId.split('-').every((part) => BigInt(part) <= MAX_ID_PART);
}

/** The query of a read that may wait for its writer's entry: validates `after` against the configured streams. */
export function readYourWritesQuery(streams: readonly string[]) {
  const allowed = streams.length > 0 ? streams.join(', ') : '(none configured)';
  return z.object({
    after: z
      .string()
      .refine((v) => {
        const after = parseAfter(v);
        return after !== undefined && streams.includes(after.stream);
      }, `after must be <stream>:<entry id>, the stream one of ${allowed} and the entry id like 1700000000000-0 (the id XADD returned)`)
      .optional()
      .describe(
        'Read your writes: `<stream>:<entry id>` of an entry this client appended. The answer waits until the ' +
          'snapshots have applied that stream up to that entry (or past it), at most `wait` ms; then 504 RS_NOT_CAUGHT_UP.',
      ),
    // Decimal digits only: Number() would also take '0x10', '1e3', ' 5' and '' (as 0).
    wait: z
      .string({ error: WAIT_RULE })
      .regex(/^\d{1,5}$/, WAIT_RULE)
      .transform(Number)
      .pipe(z.number().max(MAX_WAIT_MS, WAIT_RULE))
      .default(DEFAULT_WAIT_MS)
      .describe(`With \`after\`: how long to wait for the snapshots to catch up, in ms (0-${MAX_WAIT_MS}).`),
  });
}

export type CatchUp = { readonly caughtUp: true } | { readonly caughtUp: false; readonly cursor: string };

/** A poll that has not answered this long after the deadline means Redis is not answering: 503, not a late 504. */
const UNANSWERED_GRACE_MS = 250;

/** Whether a subject's snapshot reflects a stream up to an entry (AppliedPositions.through). */
export type AppliedThroughCheck = (
  stream: string,
  subject: string,
  entryId: string,
) => Promise<{ readonly applied: boolean; readonly cursor: string }>;

/**
 * Waits until the snapshot of `subject` reflects `stream` up to `entryId` (every entry of its
 * partition up to there applied), polling Redis with a short, growing pause, for at most `waitMs`.
 * `signal` (the client went away) ends the wait early.
 */
export async function waitForCatchUp(
  appliedThrough: AppliedThroughCheck,
  subject: string,
  { stream, entryId }: After,
  waitMs: number,
  signal?: AbortSignal,
): Promise<CatchUp> {
  const deadline = Date.now() + waitMs;
  let pause = FIRST_POLL_MS;
  for (;;) {
    // Each poll is bounded by REDIS_WAIT_MS too: a Redis that is away answers 503 within a second, whatever the wait.
    const { applied, cursor } = await withinDeadline(
      appliedThrough(stream, subject, entryId),
      Math.min(deadline + UNANSWERED_GRACE_MS, Date.now() + REDIS_WAIT_MS),
      waitMs,
    );
    if (applied) return { caughtUp: true };
    const left = deadline - Date.now();
    if (left <= 0 || signal?.aborted) return { caughtUp: false, cursor };
    await sleep(Math.min(pause, left));
    pause = Math.min(pause * 2, MAX_POLL_MS);
  }
}

/** The read, or a 503 RS_UNAVAILABLE once `until` passes first (ioredis would otherwise hold it through its reconnects). */
async function withinDeadline<T>(read: Promise<T>, until: number, waitMs: number): Promise<T> {
  const timer = new AbortController();
  const late = sleep(Math.max(0, until - Date.now()), undefined, { signal: timer.signal }).then(() => {
    throw new ApiError(
      'unavailable',
      `Redis did not answer within ${Math.min(waitMs + UNANSWERED_GRACE_MS, REDIS_WAIT_MS)} ms; retry shortly.`,
    );
  });
  late.catch(() => undefined);
  try {
    return await Promise.race([read, late]);
  } finally {
    timer.abort();
    // The read may still fail later, after the answer went out: nobody waits for it then.
    read.catch(() => undefined);
  }
}
