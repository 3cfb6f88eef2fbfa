import { ReplyError, type Redis } from 'ioredis';
import type { EventCatalog } from './catalog.ts';
import { EventCodec, type CodecOptions } from './codec.ts';
import { AppendNotConfirmedError, AppendRejectedError, EventStoreError, VersionConflictError } from './errors.ts';
import { eventStoreKeys } from './keys.ts';
import { parseIdempotencySettings, type IdempotencySettings, type IdempotencySettingsInput } from './options.ts';
import { defineEventStoreScripts, packJsonArgument } from './scripts.ts';
import { parseXReadReply, toStreamEntries } from './replies.ts';
import type {
  AppendOptions,
  AppendResult,
  EventInput,
  ExpectedVersion,
  RecordedEvent,
  StartPosition,
  StreamEntry,
} from './types.ts';

export interface ReadOptions {
  /** First entry id to read (inclusive); `-` = the beginning. */
  readonly from?: string;
  /** Last entry id to read (inclusive); `+` = the end. */
  readonly to?: string;
  /** Entries per XRANGE round trip; memory stays bounded by one page. */
  readonly pageSize?: number;
  /** Called for an entry that does not decode; without it such an entry throws. */
  readonly onInvalid?: (error: EventStoreError, entry: StreamEntry) => void;
}

export interface SubscribeOptions {
  readonly from?: StartPosition | Readonly<Record<string, StartPosition>>;
  readonly signal?: AbortSignal;
  /** Most entries per XREAD. */
  readonly count?: number;
  /** How long one XREAD waits for new entries, in ms; also bounds how late an abort is noticed. */
  readonly blockMs?: number;
  readonly onInvalid?: (error: EventStoreError, entry: StreamEntry) => void;
}

export interface EventStoreOptions extends CodecOptions {
  readonly redis: Redis;
  readonly catalog: EventCatalog;
  /** How long appended event ids are remembered (see `idempotencySettingsSchema`): 24 h, 100,000 ids per stream by default. */
  readonly idempotency?: IdempotencySettingsInput;
}

/**
 * Appends typed events to Redis Streams and reads them back. One class, a few verbs:
 * `append`, `read`, `subscribe`.
 */
export class RedisEventStore {
  readonly codec: EventCodec;
  readonly catalog: EventCatalog;
  readonly idempotency: IdempotencySettings;
  private readonly redis: Redis;

  constructor(options: EventStoreOptions) {
    this.redis = options.redis;
    this.idempotency = parseIdempotencySettings(options.idempotency);
    this.catalog = options.catalog;
    this.codec = new EventCodec(options.catalog, options);
    defineEventStoreScripts(this.redis);
  }

  /**
   * Appends events to one stream in a single script call: all are validated first, then all
   * are written, or none (on a validation error or a version conflict).
   */
  async append(
    stream: string,
    events: EventInput | readonly EventInput[],
    options: AppendOptions = {},
  ): Promise<AppendResult> {
    const list = Array.isArray(events) ? (events as readonly EventInput[]) : [events as EventInput];
    if (list.length === 0) return { entryIds: [], duplicates: [], versions: {} };
    const expected = encodeExpectedVersion(options.expectedVersion ?? 'any');
    const subjects: (string | undefined)[] = [];
    const packed: (string | number)[] = [];
    for (const event of list) {
      const { fields, subject, eventId } = this.codec.encode(stream, event);
      subjects.push(subject);
      packed.push(eventId ?? '', subject ?? '', subject === undefined ? '' : expected, fields.length);
      for (const field of fields) packed.push(field);
    }
    const args = [this.idempotency.windowMs, this.idempotency.maxIds, list.length, packJsonArgument(packed)];
    let reply: unknown[];
    try {
      const keys = [
        eventStoreKeys.versions(stream),
        eventStoreKeys.eventIds(stream),
        eventStoreKeys.eventIdsByAge(stream),
      ] as const;
      reply = await this.redis.redsourceAppend(stream, ...keys, ...args);
    } catch (error) {
      // Redis answered with an error: the script checks before it writes, so nothing was appended.
      if (error instanceof ReplyError) throw new AppendRejectedError(stream, error as Error);
      throw new AppendNotConfirmedError(stream, error);
    }
    if (reply[0] === 'CONFLICT') {
      throw new VersionConflictError(stream, String(reply[1]), Number(reply[2]), Number(reply[3]));
    }
    // One value per event in each of three strings (see append-4.lua's Reply).
    const entryIds = String(reply[1]).split(' ');
    const flags = String(reply[2]);
    const counts = String(reply[3]).split(' ');
    const duplicates: number[] = [];
    // Null-prototype: a subject may be called `__proto__` (on a plain object that would set the prototype).
    const versions = Object.create(null) as Record<string, number>;
    for (let i = 0; i < list.length; i++) {
      if (flags.charCodeAt(i) === 49) duplicates.push(i);
      const version = Number(counts[i]);
      const subject = subjects[i];
      if (subject !== undefined && version >= 0) versions[subject] = version;
    }
    return { entryIds, duplicates, versions };
  }

  /** The number of events appended through redsource for a subject: the version `expectedVersion` compares with. */
  async version(stream: string, subject: string): Promise<number> {
    return Number((await this.redis.hget(eventStoreKeys.versions(stream), subject)) ?? 0);
  }

  /** Raw entries of a stream, one XRANGE page at a time. */
  async *readPages(stream: string, options: Omit<ReadOptions, 'onInvalid'> = {}): AsyncGenerator<StreamEntry[]> {
    const pageSize = options.pageSize ?? 500;
    const to = options.to ?? '+';
    let from = options.from ?? '-';
    for (;;) {
      const page = toStreamEntries(await this.redis.xrange(stream, from, to, 'COUNT', pageSize));
      if (page.length > 0) yield page;
      if (page.length < pageSize) return;
      from = `(${(page[page.length - 1] as StreamEntry).id}`;
    }
  }

  /** Typed events of a stream in order, paged. */
  async *read(stream: string, options: ReadOptions = {}): AsyncGenerator<RecordedEvent> {
    for await (const page of this.readPages(stream, options)) {
      for (const entry of page) {
        const decoded = this.decodeOrReport(stream, entry, options.onInvalid);
        if (decoded) yield decoded;
      }
    }
  }

  /**
   * Follows several streams at once with XREAD BLOCK (no consumer group), on a connection of its
   * own so blocking never delays other commands. Ends when the signal aborts.
   *
   * On a Redis Cluster one XREAD cannot span streams of different slots (CROSSSLOT): each stream is
   * then followed by its own XREAD on its own connection, and the streams' events are merged, each
   * stream's in order (there is no order across streams to keep).
   */
  subscribe(streams: readonly string[], options: SubscribeOptions = {}): AsyncGenerator<RecordedEvent> {
    const positions = new Map(streams.map((s) => [s, startId(pickStart(options.from, s))]));
    // `latest` means latest when subscribe() is called, not when iteration begins: resolve it now.
    const resolved = resolveLatest(this.redis, positions);
    resolved.catch(() => undefined);
    const cluster = (this.redis as { isCluster?: boolean }).isCluster === true;
    if (!cluster || positions.size <= 1) return this.follow([...positions.keys()], positions, resolved, options);
    return this.followEach([...positions.keys()], positions, resolved, options);
  }

  /** One reader per stream (a Redis Cluster), merged as each yields; the merge ends all of them when it ends. */
  private async *followEach(
    streams: readonly string[],
    positions: Map<string, string>,
    resolved: Promise<void>,
    options: SubscribeOptions,
  ): AsyncGenerator<RecordedEvent> {
    if (options.signal?.aborted) return;
    // Ends every reader when the caller's signal aborts, and when the merge ends otherwise (a reader
    // failed, the caller returned or threw): a reader blocked in XREAD is cut off by its disconnect.
    const stop = new AbortController();
    const onAbort = () => stop.abort();
    options.signal?.addEventListener('abort', onAbort, { once: true });
    const readers = streams.map((stream) =>
      this.follow([stream], positions, resolved, { ...options, signal: stop.signal }),
    );
    const pending = new Map<number, Promise<{ index: number; result: IteratorResult<RecordedEvent> }>>();
    const request = (index: number) => {
      const next = (readers[index] as AsyncGenerator<RecordedEvent>).next().then((result) => ({ index, result }));
      // Read ahead while the caller holds an event: a failure then is thrown by the merge's next call, not left unhandled.
      next.catch(() => undefined);
      pending.set(index, next);
    };
    try {
      readers.forEach((_, index) => request(index));
      while (pending.size > 0) {
        const { index, result } = await Promise.race(pending.values());
        pending.delete(index);
        if (result.done) continue;
        request(index);
        yield result.value;
      }
    } finally {
      options.signal?.removeEventListener('abort', onAbort);
      stop.abort();
      // Each reader ends its XREAD and closes its connection (a failed one is the error being thrown).
      await Promise.allSettled(pending.values());
      await Promise.allSettled(readers.map((reader) => reader.return(undefined)));
    }
  }

  private async *follow(
    streams: readonly string[],
    positions: Map<string, string>,
    resolved: Promise<void>,
    options: SubscribeOptions,
  ): AsyncGenerator<RecordedEvent> {
    const reader = this.redis.duplicate();
    let closed = false;
    const onAbort = () => {
      closed = true;
      reader.disconnect();
    };
    options.signal?.addEventListener('abort', onAbort, { once: true });
    try {
      await resolved;
      while (!options.signal?.aborted) {
        let reply: unknown;
        try {
          const ids = streams.map((stream) => positions.get(stream) as string);
          reply = await reader.xread(
            'COUNT',
            options.count ?? 500,
            'BLOCK',
            options.blockMs ?? 5000,
            'STREAMS',
            ...streams,
            ...ids,
          );
        } catch (error) {
          if (options.signal?.aborted) return;
          throw error;
        }
        for (const { stream, entries } of parseXReadReply(reply)) {
          for (const entry of entries) {
            positions.set(stream, entry.id);
            const decoded = this.decodeOrReport(stream, entry, options.onInvalid);
            if (decoded) yield decoded;
          }
        }
      }
    } finally {
      options.signal?.removeEventListener('abort', onAbort);
      // Once only: a second disconnect() of a closed connection leaves ioredis' 2 s disconnect timer running.
      if (!closed) reader.disconnect();
    }
  }

  private decodeOrReport(
    stream: string,
    entry: StreamEntry,
    onInvalid: ((error: EventStoreError, entry: StreamEntry) => void) | undefined,
  ): RecordedEvent | undefined {
    const decoded = this.codec.tryDecode(stream, entry.id, entry.fields);
    if (!(decoded instanceof EventStoreError)) return decoded;
    if (!onInvalid) throw decoded;
    onInvalid(decoded, entry);
    return undefined;
  }
}

function encodeExpectedVersion(expected: ExpectedVersion): string {
  if (expected === 'any') return '';
  if (expected === 'no_subject') return '0';
  if (!Number.isInteger(expected) || expected < 0) {
    throw new RangeError(
      `expectedVersion must be 'any', 'no_subject' or a non-negative integer, got ${String(expected)}`,
    );
  }
  return String(expected);
}

function pickStart(from: SubscribeOptions['from'], stream: string): StartPosition {
  if (from === undefined) return 'latest';
  if (typeof from === 'string' || 'after' in from) return from as StartPosition;
  return from[stream] ?? 'latest';
}

function startId(position: StartPosition): string {
  if (position === 'beginning') return '0-0';
  if (position === 'latest') return '$';
  return position.after;
}

/** `$` must become a concrete id once, or entries added between two XREADs would be missed. */
async function resolveLatest(redis: Redis, positions: Map<string, string>): Promise<void> {
  for (const [stream, id] of positions) {
    if (id !== '$') continue;
    const last = toStreamEntries(await redis.xrevrange(stream, '+', '-', 'COUNT', 1));
    positions.set(stream, last[0]?.id ?? '0-0');
  }
}
