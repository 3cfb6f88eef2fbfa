import { describeRedisUnavailable, redisUnavailableKind, type RedisUnavailableKind } from './redis-errors.ts';

/** Every error the event store throws; `code` is stable, grep for it. */
export class EventStoreError extends Error {
  constructor(
    readonly code: string,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = new.target.name;
  }
}

/** One problem found by a schema, with the dotted path of the field it concerns. */
export interface FieldIssue {
  readonly field: string;
  readonly message: string;
}

const describeIssues = (issues: readonly FieldIssue[]) =>
  issues.map((i) => `${i.field || '(event)'}: ${i.message}`).join('; ');

/** An event, on append or on decode, does not satisfy its type's schema. */
export class EventValidationError extends EventStoreError {
  constructor(
    readonly stream: string,
    readonly eventType: string,
    readonly issues: readonly FieldIssue[],
  ) {
    super(
      'RS_EVENT_INVALID',
      `Invalid '${eventType}' event for stream '${stream}': ${describeIssues(issues)}. Fix the named field(s); the event was not accepted.`,
    );
  }
}

/** A stream entry that cannot be turned into an event at all (no type, bad JSON, duplicate fields). */
export class UndecodableEntryError extends EventStoreError {
  constructor(
    readonly stream: string,
    readonly entryId: string,
    readonly reason: string,
  ) {
    super('RS_ENTRY_UNDECODABLE', `Entry ${entryId} of stream '${stream}' cannot be decoded: ${reason}.`);
  }
}

/** The event type is not declared for the stream in the catalog. */
export class UnknownEventTypeError extends EventStoreError {
  constructor(
    readonly stream: string,
    readonly eventType: string,
    known: readonly string[],
  ) {
    super(
      'RS_EVENT_TYPE_UNKNOWN',
      `Stream '${stream}' has no event type '${eventType}'. Known types: ${known.join(', ') || '(none)'}.`,
    );
  }
}

/** The stream is not in the catalog the store was built with. */
export class UnknownStreamError extends EventStoreError {
  constructor(
    readonly stream: string,
    known: readonly string[],
  ) {
    super(
      'RS_STREAM_UNKNOWN',
      `Stream '${stream}' is not in the event catalog. Declared streams: ${known.join(', ')}.`,
    );
  }
}

/** Optimistic concurrency: the subject's version was not the one the caller expected. Nothing was written. */
export class VersionConflictError extends EventStoreError {
  constructor(
    readonly stream: string,
    readonly subject: string,
    readonly expected: number,
    readonly actual: number,
  ) {
    super(
      'RS_VERSION_CONFLICT',
      `Append to '${stream}' for '${subject}' expected version ${expected} but found ${actual}; nothing was written. Re-read the subject's events and retry.`,
    );
  }
}

export const isVersionConflictError = (error: unknown): error is VersionConflictError =>
  error instanceof VersionConflictError;

/** Redis did not confirm the append (connection lost, timeout); the events may or may not be in the stream. */
export class AppendNotConfirmedError extends EventStoreError {
  constructor(stream: string, cause: unknown) {
    super(
      'RS_APPEND_UNCONFIRMED',
      `Append to '${stream}' was not confirmed by Redis (${cause instanceof Error ? cause.message : String(cause)}). ` +
        'Retry with the same event ids: ids make the retry idempotent.',
      { cause },
    );
  }
}

/**
 * Redis refused the append; nothing was written. The message says which kind of refusal it is: a
 * refused login, a missing ACL permission or Redis's state (out of memory, read-only...) pass once
 * that is fixed; anything else (a key of another type) fails again until the data is fixed.
 */
export class AppendRejectedError extends EventStoreError {
  constructor(stream: string, cause: Error) {
    const reply = cause.message.trim().replace(/[.\s]+$/, '');
    const kind = redisUnavailableKind(cause);
    super(
      'RS_APPEND_REJECTED',
      kind
        ? `Redis refused the append to '${stream}': ${describeRedisUnavailable(kind)} (${reply}). Nothing was written. ${WHAT_TO_CHECK[kind] ?? RETRY_LATER}`
        : `Redis rejected the append to '${stream}': ${reply}. Nothing was written. It fails again on retry until ` +
            (/WRONGTYPE|is a \w+, expected a/.test(reply)
              ? 'the key is fixed (it holds another type than the one redsource writes there).'
              : 'what the message names is fixed.'),
      { cause },
    );
  }
}

const RETRY_LATER = 'It may pass once Redis recovers: retry with the same event ids (they make the retry idempotent).';
const WHAT_TO_CHECK: Partial<Record<RedisUnavailableKind, string>> = {
  WRONGPASS: 'Check the user and password in REDIS_URL and that the ACL user is enabled (ACL SETUSER <user> on).',
  NOAUTH: 'Put the user and password in REDIS_URL (redis://user:password@host:port).',
  NOPERM:
    'Give the ACL user the rules it needs: appending needs XADD on the stream and EVALSHA/EVAL with the redsource:* keys (README, Security).',
  OOM: `Free memory or raise maxmemory (or set an eviction policy that spares these keys). ${RETRY_LATER}`,
};

/** A RedisEventStore option is out of range; the message names it. */
export class InvalidEventStoreOptionsError extends EventStoreError {
  constructor(details: string) {
    super('RS_EVENT_STORE_OPTIONS_INVALID', `Invalid event store options: ${details}.`);
  }
}
