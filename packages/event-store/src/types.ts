/** An event as the caller appends it: plain data, validated against its type's schema. */
export interface EventInput<Type extends string = string, Data = unknown> {
  readonly type: Type;
  readonly data: Data;
  readonly metadata?: {
    /** Makes the append idempotent: an event whose id was already appended is not appended again. */
    readonly id?: string;
    readonly source?: string;
    readonly subject?: string;
    readonly time?: string;
  };
}

export type WireFormat = 'flat' | 'envelope';

/** An event read back from a stream, with where it lives. */
export interface RecordedEvent<Type extends string = string, Data = unknown> {
  readonly type: Type;
  readonly data: Data;
  readonly stream: string;
  /** The Redis stream entry id (`<ms>-<seq>`). */
  readonly entryId: string;
  readonly format: WireFormat;
  /** CloudEvents attributes of an envelope (id, source, subject, time and any extension); empty for flat entries. */
  readonly metadata: Readonly<Record<string, string>>;
}

/** A raw entry as Redis returns it. */
export interface StreamEntry {
  readonly id: string;
  readonly fields: readonly string[];
}

/** Where a read or subscription starts: the first entry, only entries added from now on, or after an id. */
export type StartPosition = 'beginning' | 'latest' | { readonly after: string };

/** `any`: no check. `no_subject`: the subject has no events yet. A number: the subject has exactly that many. */
export type ExpectedVersion = 'any' | 'no_subject' | number;

export interface AppendOptions {
  readonly expectedVersion?: ExpectedVersion;
}

export interface AppendResult {
  /** Stream entry ids, one per event, in order. A duplicate (id already appended) gets the original entry's id. */
  readonly entryIds: string[];
  /** Indexes of events that were not appended again because their id was already appended. */
  readonly duplicates: number[];
  /** The subjects' versions after the append. */
  readonly versions: Readonly<Record<string, number>>;
}
