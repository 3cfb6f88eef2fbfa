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
  constructor(readonly stream: string, known: readonly string[]) {
    super('RS_STREAM_UNKNOWN', `Stream '${stream}' is not in the event catalog. Declared streams: ${known.join(', ')}.`);
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

/** Redis refused the append (for example the stream key holds another type); nothing was written. */
export class AppendRejectedError extends EventStoreError {
  constructor(stream: string, cause: Error) {
    super(
      'RS_APPEND_REJECTED',
      `Redis rejected the append to '${stream}': ${cause.message}. Nothing was written. ` +
        'A wrong key type fails again on retry; a transient state (LOADING, BUSY, OOM) may pass later.',
      { cause },
    );
  }
}

/** A RedisEventStore option is out of range; the message names it. */
export class InvalidEventStoreOptionsError extends EventStoreError {
  constructor(details: string) {
    super('RS_EVENT_STORE_OPTIONS_INVALID', `Invalid event store options: ${details}.`);
  }
}
