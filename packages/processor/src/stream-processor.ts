import { setTimeout as sleep } from 'node:timers/promises';
import type { Redis } from 'ioredis';
import type { RedisEventStore, StreamEntry } from '@redsource/event-store';
import type { SnapshotStore } from '@redsource/snapshot-store';
import { Applier } from './applier.ts';
import { HandlerAttempts } from './attempts.ts';
import { BatchBuilder } from './batch-builder.ts';
import { ConsumerGroup } from './consumer-group.ts';
import { ProcessorStateError } from './errors.ts';
import { HandlerRegistry } from './handlers.ts';
import { processorKeys } from './keys.ts';
import { silentLogger, type Logger } from './logger.ts';
import { parseProcessorSettings, type ProcessorSettings, type ProcessorSettingsInput } from './options.ts';
import { discoverStreams } from './discovery.ts';
import { RedisWaits, type WaitingOnRedis } from './redis-wait.ts';
import { trimApplied } from './retention.ts';
import { emptyStreamStats, type StreamStats } from './stats.ts';

export interface StreamProcessorOptions extends ProcessorSettingsInput {
  /** Commands connection; the processor opens its own blocking connection beside it. */
  readonly redis: Redis;
  readonly eventStore: RedisEventStore;
  readonly snapshots: SnapshotStore<unknown>;
  readonly handlers: HandlerRegistry;
  /** Streams to consume; default: every stream registered by name. */
  readonly streams?: readonly string[];
  /** Also consume every stream whose name starts with one of these, as it appears; default: the prefixes registered as `<prefix>*`. */
  readonly streamPrefixes?: readonly string[];
  readonly logger?: Logger;
}

const MAX_ERROR_BACKOFF_MS = 5_000;
/** Redis refusing or unreachable: looked at again within a second, so work resumes as soon as it can. */
const MAX_UNAVAILABLE_BACKOFF_MS = 1_000;

type Delivered = Awaited<ReturnType<ConsumerGroup['readNew']>>;

/**
 * Consumer-group loop: XREADGROUP on a blocking connection of its own, every batch folded by the
 * registered handlers and applied exactly once through the apply script (which also acks), own
 * pending entries re-read first after a restart, dead consumers' entries claimed by the living.
 */
export class StreamProcessor {
  readonly settings: ProcessorSettings;
  private readonly streamList: string[];
  private readonly streamPrefixes: readonly string[];
  private readonly redis: Redis;
  private readonly group: ConsumerGroup;
  private readonly builder: BatchBuilder;
  private readonly applier: Applier;
  /** Failed handler attempts per entry (REDSOURCE_MAX_DELIVERIES); claimed entries may carry counts of another process. */
  private readonly attempts: HandlerAttempts;
  private readonly logger: Logger;
  private readonly statsByStream = new Map<string, StreamStats>();
  /** What this processor waits on Redis for: per stream (its applies), 'read' and 'claim' (the loops). */
  private readonly waits = new RedisWaits();
  private reader: Redis | undefined;
  private readerClientId: number | undefined;
  /** The CLIENT ID request sent when the reader became ready, until it answers. */
  private readerIdRequest: Promise<void> | undefined;
  private loops: Promise<void>[] = [];
  private heartbeatTimer: NodeJS.Timeout | undefined;
  private stopRequestedAt: number | undefined;
  private state: 'idle' | 'running' | 'stopping' | 'stopped' = 'idle';
  private readonly inFlight = new Set<Promise<unknown>>();
  private readonly stopping = new AbortController();
  private groupsReady = false;
  private discoveredAt = 0;

  constructor(options: StreamProcessorOptions) {
    this.settings = parseProcessorSettings(options);
    this.redis = options.redis;
    this.logger = options.logger ?? silentLogger;
    this.streamList = [...(options.streams ?? options.handlers.streams)];
    this.streamPrefixes = options.streamPrefixes ?? options.handlers.streamPrefixes;
    if (this.streamList.length === 0 && this.streamPrefixes.length === 0) {
      throw new ProcessorStateError('No streams to process: register a handler (for a stream or a `<prefix>*`) or pass `streams`.');
    }
    for (const stream of this.streamList) this.statsByStream.set(stream, emptyStreamStats());
    this.group = new ConsumerGroup(this.redis, this.settings);
    const attempts = (this.attempts = new HandlerAttempts(this.redis, this.settings.group, this.waits, this.logger));
    this.builder = new BatchBuilder(options.eventStore.codec, options.handlers, options.snapshots, this.settings, this.logger, attempts);
    this.applier = new Applier(options.eventStore, options.snapshots, this.builder, this.settings, processorKeys.deadLetters, this.logger, this.waits, attempts);
    this.snapshots = options.snapshots;
  }

  private readonly snapshots: SnapshotStore<unknown>;

  /** The streams consumed now (grows as streams matching a prefix appear). */
  get streams(): readonly string[] {
    return this.streamList;
  }

  get consumer(): string {
    return this.settings.consumer;
  }

  get running(): boolean {
    return this.state === 'running';
  }

  /**
   * Why this processor waits on Redis now (the longest wait under way), or undefined when it does
   * not: Redis refuses writes (OOM, READONLY, MISCONF...) or cannot be reached. `/readyz` shows it.
   */
  get waiting(): WaitingOnRedis | undefined {
    return this.state === 'running' ? this.waits.oldest() : undefined;
  }

  /** Counters per stream since start, and why the stream waits on Redis if it does. */
  stats(): Record<string, Readonly<StreamStats>> {
    return Object.fromEntries(
      [...this.statsByStream].map(([s, st]) => [s, { ...st, waiting: this.waits.get(s) ?? this.waits.get('read') ?? this.waits.get('claim') }]),
    );
  }

  /**
   * Starts the loops and resolves; runs until stop(). Redis being away is not an error: groups are
   * created (and work taken up) as soon as it answers, retrying with backoff meanwhile.
   */
  async start(): Promise<void> {
    if (this.state !== 'idle') throw new ProcessorStateError(`start() called on a processor that is ${this.state}; create a new one.`);
    this.reader = this.redis.duplicate({ connectionName: `redsource:${this.settings.consumer}:reader` });
    this.reader.on('error', (error: Error) => this.logger.debug({ err: error.message }, 'reader connection error'));
    this.reader.on('ready', () => {
      this.readerIdRequest = this.refreshReaderId();
    });
    this.state = 'running';
    void this.heartbeat();
    this.heartbeatTimer = setInterval(() => void this.heartbeat(), this.settings.heartbeatMs);
    this.loops = [this.readLoop(), this.claimLoop()];
    this.logger.info({ group: this.settings.group, consumer: this.settings.consumer, streams: this.streams }, 'processor started');
  }

  /** Finishes the batch in hand (bounded by shutdownTimeoutMs), acks it and closes its connection. */
  async stop(): Promise<void> {
    if (this.state !== 'running') return;
    this.state = 'stopping';
    this.stopRequestedAt = Date.now();
    this.stopping.abort();
    clearInterval(this.heartbeatTimer);
    await this.wakeReader();
    // Bounded: with Redis away, a loop may wait on a command that only fails after ioredis gives up.
    // The timer is cancelled once the loops settle: a pending one would keep the process alive for shutdownTimeoutMs.
    const settled = Promise.allSettled([...this.loops, ...this.inFlight]);
    const deadline = new AbortController();
    const timedOut = sleep(this.settings.shutdownTimeoutMs, true, { signal: deadline.signal }).catch(() => false);
    const gaveUp = await Promise.race([settled.then(() => false), timedOut]);
    deadline.abort();
    if (gaveUp) this.logger.warn({ consumer: this.settings.consumer }, 'stop: the batch in hand did not finish in time; it stays pending for a later delivery');
    this.reader?.disconnect();
    this.state = 'stopped';
    this.logger.info({ consumer: this.settings.consumer }, 'processor stopped');
  }

  /** Adds the streams that match a prefix and are not consumed yet, creating their groups. */
  private async discover(): Promise<void> {
    if (this.streamPrefixes.length === 0) return;
    this.discoveredAt = Date.now();
    const found = (await discoverStreams(this.redis, this.streamPrefixes)).filter((s) => !this.streamList.includes(s));
    if (found.length === 0) return;
    for (const stream of found) await this.ensureGroup(stream);
    this.streamList.push(...found);
    this.logger.info({ streams: found }, 'new streams matching a prefix');
  }

  private async ensureGroups(): Promise<void> {
    for (const stream of this.streams) await this.ensureGroup(stream);
  }

  private async ensureGroup(stream: string): Promise<void> {
    await this.group.ensure(stream);
    // A group that starts later than the first entry must not wait for entries it will never see.
    // (Every time, not only on creation: a crash between the two must not leave the cursor unset.)
    if (this.settings.start !== 'beginning') {
      await this.snapshots.initCursor(stream, await this.group.lastDeliveredId(stream));
    }
    this.statsFor(stream);
  }

  /**
   * Ends the reader's blocked XREADGROUP at once (else stop waits up to blockMs). A reader that cannot
   * become ready has sent nothing (its commands wait in ioredis' queue): closed, it cuts off no reply.
   */
  private async wakeReader(): Promise<void> {
    const reader = this.reader;
    if (!reader) return;
    // Closed half-way through its handshake, ioredis keeps a 2 s timer running: let the handshake end first.
    if (reader.status === 'connecting' || reader.status === 'connect') await handshakeEnded(reader, 1_000);
    if (reader.status !== 'ready') {
      reader.disconnect();
      return;
    }
    // Ready, its CLIENT ID asked for and sent before any read: the answer is one round trip away (bounded all the same).
    if (this.readerClientId === undefined && this.readerIdRequest) {
      const bound = new AbortController();
      await Promise.race([this.readerIdRequest, sleep(500, undefined, { signal: bound.signal }).catch(() => undefined)]);
      bound.abort();
    }
    if (this.readerClientId === undefined) return;
    // Wakes the blocked XREADGROUP as if it timed out, so no delivered reply is ever cut off.
    // Not awaited: with Redis away it would only return when ioredis gives up; the wait below is bounded.
    this.redis.client('UNBLOCK', this.readerClientId).catch(() => undefined);
  }

  private async refreshReaderId(): Promise<void> {
    try {
      this.readerClientId = Number(await this.reader?.client('ID'));
    } catch {
      this.readerClientId = undefined;
    }
  }

  private async heartbeat(): Promise<void> {
    await this.group.heartbeat(this.stats()).catch((error: unknown) => this.logger.debug({ err: String(error) }, 'heartbeat failed'));
  }

  private async readLoop(): Promise<void> {
    let backoff = 100;
    let recovered = false;
    // The next batch is read while the current one is applied, so Redis and Node work at the same time.
    let next: Promise<Delivered> | undefined;
    while (this.state === 'running') {
      try {
        if (!this.groupsReady) {
          await this.discover();
          await this.ensureGroups();
          this.groupsReady = true;
        }
        if (this.streamList.length === 0) {
          // Only prefixes so far, and nothing matches them yet.
          await sleep(this.settings.blockMs, undefined, { signal: this.stopping.signal }).catch(() => undefined);
          continue;
        }
        if (!recovered) {
          await this.recoverOwnPending();
          recovered = true;
        }
        const reader = this.reader;
        // stop() may have come during the awaits above: a read sent now would block past its UNBLOCK.
        if (!reader || this.state !== 'running') break;
        const batches = await (next ?? this.group.readNew(reader, this.streams));
        next = batches.length > 0 && this.state === 'running' ? this.group.readNew(reader, this.streams) : undefined;
        next?.catch(() => undefined);
        await Promise.all(batches.map(({ stream, entries }) => this.track(this.process(stream, entries, true))));
        backoff = 100;
        this.waits.clear('read');
      } catch (error) {
        next = undefined;
        if (this.state !== 'running') return;
        const unavailable = this.onLoopError(error, 'read');
        // Entries delivered before the failure may still be ours and unapplied: take them up first.
        // (Re-reading raises their delivery counts, which count for nothing: see HandlerAttempts.)
        recovered = false;
        await sleep(backoff, undefined, { signal: this.stopping.signal }).catch(() => undefined);
        backoff = Math.min(backoff * 2, unavailable ? MAX_UNAVAILABLE_BACKOFF_MS : MAX_ERROR_BACKOFF_MS);
      }
    }
    // Stopping: what the read ahead already took is in hand too; apply it before closing.
    const last = await next?.catch(() => [] as Delivered);
    if (last?.length) await Promise.all(last.map(({ stream, entries }) => this.track(this.process(stream, entries, true))));
  }

  /** Like streamz's replay_pending: what this consumer was given before a restart comes first. */
  private async recoverOwnPending(): Promise<void> {
    for (const stream of this.streams) {
      let after = '0';
      while (this.state === 'running') {
        const entries = await this.group.readOwnPending(stream, after);
        if (entries.length === 0) break;
        const deleted = entries.filter((e) => e.fields.length === 0);
        const live = entries.filter((e) => e.fields.length > 0);
        await this.group.ack(stream, deleted.map((e) => e.id));
        this.statsFor(stream).deleted += deleted.length;
        if (live.length > 0) await this.process(stream, live);
        after = (entries[entries.length - 1] as StreamEntry).id;
        if (entries.length < this.settings.batchSize) break;
      }
    }
  }

  private async claimLoop(): Promise<void> {
    const cursors = new Map(this.streams.map((s) => [s, '0-0']));
    while (this.state === 'running') {
      await sleep(this.settings.claimIntervalMs, undefined, { signal: this.stopping.signal }).catch(() => undefined);
      if (this.state !== 'running') return;
      if (!this.groupsReady) continue;
      try {
        const removedEverywhere = new Set<string>();
        for (const stream of this.streams) {
          const claimed = await this.group.claim(stream, cursors.get(stream) ?? '0-0');
          cursors.set(stream, claimed.next);
          const stats = this.statsFor(stream);
          stats.deleted += claimed.deletedIds.length;
          stats.claimed += claimed.entries.length;
          if (claimed.entries.length > 0) {
            this.logger.info({ stream, count: claimed.entries.length }, 'claimed entries of a silent consumer');
            this.attempts.mayHaveCounts(stream);
            await this.track(this.process(stream, claimed.entries));
          }
          for (const name of await this.group.removeDeadConsumers(stream)) removedEverywhere.add(name);
        }
        await this.group.forgetDeadHeartbeats([...removedEverywhere]);
        if (this.settings.retention) {
          for (const stream of this.streams) await trimApplied(this.redis, stream, this.snapshots);
        }
        if (this.streamPrefixes.length > 0 && Date.now() - this.discoveredAt >= this.settings.discoverIntervalMs) await this.discover();
        this.waits.clear('claim');
      } catch (error) {
        if (this.state !== 'running') return;
        this.onLoopError(error, 'claim');
      }
    }
  }

  /** `contiguous`: the entries are consecutive in the stream (a fresh XREADGROUP `>` batch). */
  private async process(stream: string, entries: readonly StreamEntry[], contiguous = false): Promise<void> {
    if (entries.length === 0) return;
    const stats = this.statsFor(stream);
    const batch = await this.builder.build(stream, entries, { signal: this.stopping.signal });
    const outcome = await this.applier.apply(stream, batch, {
      ackGroup: this.settings.group,
      contiguous,
      stats,
      stopRequestedAt: () => this.stopRequestedAt,
    });
    this.logger.debug(
      { stream, first: entries[0]?.id, count: entries.length, applied: outcome.applied, skipped: outcome.skipped, deadLettered: outcome.deadLettered },
      'batch applied',
    );
  }

  /** Records a loop's failure; returns whether it is Redis refusing or unreachable (then the loop waits, and says so). */
  private onLoopError(error: unknown, source: 'read' | 'claim'): boolean {
    const message = error instanceof Error ? error.message : String(error);
    const noted = this.waits.note(source, error);
    const unavailable = noted !== undefined;
    const waiting = unavailable ? this.waits.get(source)?.reason : undefined;
    for (const stats of this.statsByStream.values()) {
      stats.lastError = waiting ?? message;
      stats.lastErrorAt = Date.now();
    }
    if (waiting) {
      // The reason in plain words, not the client's wording ("Reached the max retries per request
      // limit..."), which changes from one failed command to the next while the reason stays.
      this.logger.debug({ err: message }, 'processor loop: Redis unavailable');
      // Once per wait (and per change of reason), not once per retry.
      if (noted === 'new') this.logger.warn({ waiting }, 'processor waiting on Redis; retrying');
    } else {
      this.logger.warn({ err: message }, 'processor loop error; retrying');
    }
    // The group is gone (Redis restarted without persistence, or someone destroyed it): create it again.
    if (message.includes('NOGROUP')) this.groupsReady = false;
    return unavailable;
  }

  private statsFor(stream: string): StreamStats {
    let stats = this.statsByStream.get(stream);
    if (!stats) this.statsByStream.set(stream, (stats = emptyStreamStats()));
    return stats;
  }

  private track<T>(promise: Promise<T>): Promise<T> {
    this.inFlight.add(promise);
    return promise.finally(() => this.inFlight.delete(promise));
  }
}

/** Resolves when `connection` is ready or closed, or after `ms`; leaves no listener or timer behind. */
function handshakeEnded(connection: Redis, ms: number): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      for (const event of ['ready', 'close', 'end']) connection.off(event, done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    for (const event of ['ready', 'close', 'end']) connection.once(event, done);
  });
}
