import { EventEmitter } from 'node:events';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Redis } from 'ioredis';
import type { RedisEventStore, StreamEntry } from '@redsource/event-store';
import { compareEntryIds, type SnapshotStore } from '@redsource/snapshot-store';
import { Applier } from './applier.ts';
import { HandlerAttempts } from './attempts.ts';
import { BatchBuilder } from './batch-builder.ts';
import { BlockingConnection } from './blocking-connection.ts';
import { ConsumerGroup } from './consumer-group.ts';
import { ProcessorLoopError, ProcessorStateError } from './errors.ts';
import { reportBatch, type PartitionsChangedEvent, type ProcessorEvents } from './events.ts';
import { HandlerRegistry } from './handlers.ts';
import { processorKeys } from './keys.ts';
import { silentLogger, type Logger } from './logger.ts';
import { parseProcessorSettings, type ProcessorSettings, type ProcessorSettingsInput } from './options.ts';
import { discoverStreams } from './discovery.ts';
import { partitionKeys } from './partitions/keys.ts';
import { PartitionOwnership, unitKey, type HeldLease, type PartitionUnit } from './partitions/ownership.ts';
import { PartitionedStreams } from './partitions/streams.ts';
import { PartitionFinder } from './partitions/subject.ts';
import { untilReady } from './readiness.ts';
import { RedisWaits, type WaitingOnRedis } from './redis-wait.ts';
import { trimApplied } from './retention.ts';
import { emptyStreamStats, type StreamStats } from './stats.ts';

export interface StreamProcessorOptions extends ProcessorSettingsInput {
  /** Commands connection; the processor opens a blocking connection per stream beside it (reading). */
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

/** A partition of a stream this processor holds. */
interface HeldPartition {
  readonly stream: string;
  readonly index: number;
  /** Fencing token of the lease: every apply checks it against the partition's epoch. */
  readonly token: string;
  /** `draining`: beyond this processor's share; no new reads, released once its batch is done. */
  state: 'active' | 'draining';
  /** How far the stream is read for this partition: the next read starts after it (its batches may still be applying). */
  readFrom: string;
  /** Every entry of this partition up to here is applied (as far as this processor knows: its cursor in Redis may lag, see `stored`). */
  appliedThrough: string;
  /** The cursor as last written in Redis (an idle partition's cursor follows `appliedThrough` now and then, not at every read). */
  stored: { cursor: string; at: number };
  /** Bumped when the read position is reset: replies of reads sent before, and batches queued before, are dropped. */
  generation: number;
  /** The last batch queued: each partition's batches apply one after the other, in read order. */
  tail: Promise<void>;
  /** The batches queued and not settled. */
  readonly busy: Set<Promise<void>>;
}

export interface HeldPartitionInfo {
  readonly stream: string;
  readonly partition: number;
  readonly token: string;
  readonly state: 'active' | 'draining';
}

const MAX_ERROR_BACKOFF_MS = 5_000;
/** Redis refusing or unreachable: looked at again within a second, so work resumes as soon as it can. */
const MAX_UNAVAILABLE_BACKOFF_MS = 1_000;
const PARTITION_LOST = 'RS_PARTITION_LOST';
const PARTITION_GAP = 'RS_PARTITION_GAP';
/** An idle partition's cursor (no entries of it in the reads) is written at most this often. */
const IDLE_CURSOR_EVERY_MS = 1_000;
/** Entries one read of a stream takes at most, whatever the number of partitions held. */
const MAX_READ = 10_000;

/**
 * Partitioned processing. Every entry of a source stream belongs to one of the group's partitions
 * by its subject, and each partition is held by one processor of the group at a time: a lease
 * with a fencing token, taken and given back cooperatively (rebalance.lua) so the group's
 * processors share the partitions fairly and only partitions that move pause. A processor reads
 * the stream itself (nothing is copied) from where its partitions are applied up to, keeps the
 * entries of the partitions it holds, and applies each partition's entries in order through the
 * apply script, which checks the token against the partition's epoch and the partition's cursor
 * in the same step as its writes: a processor paused past its lease and resumed cannot apply
 * anything once its successor has claimed the partition. So a subject's entries are applied
 * exactly once and in stream order, while N processors apply N shares in parallel, none waiting
 * on another.
 */
export class StreamProcessor extends EventEmitter<ProcessorEvents> {
  readonly settings: ProcessorSettings;
  private readonly streamList: string[];
  private readonly streamPrefixes: readonly string[];
  private readonly redis: Redis;
  private readonly group: ConsumerGroup;
  private readonly builder: BatchBuilder;
  private readonly applier: Applier;
  private readonly partitionedStreams: PartitionedStreams;
  private readonly partitionOf: PartitionFinder;
  private readonly ownership: PartitionOwnership;
  /** Failed handler attempts per entry (REDSOURCE_MAX_DELIVERIES), counted in Redis. */
  private readonly attempts: HandlerAttempts;
  private readonly logger: Logger;
  private readonly snapshots: SnapshotStore<unknown>;
  private readonly statsByStream = new Map<string, StreamStats>();
  /** What this processor waits on Redis for: per stream (its applies), and per loop. */
  private readonly waits = new RedisWaits();
  /** By unitKey(stream, partition). */
  private readonly held = new Map<string, HeldPartition>();
  /** Partitions being given back (by unitKey): a round that still sees their lease must not take them again. */
  private readonly releasing = new Set<string>();
  /**
   * Per stream, a blocking connection that reads it. Per stream, because one XREAD cannot span
   * streams in different cluster slots.
   */
  private readonly readers = new Map<string, BlockingConnection>();
  private loops: Promise<void>[] = [];
  private heartbeatTimer: NodeJS.Timeout | undefined;
  private stopRequestedAt: number | undefined;
  private state: 'idle' | 'running' | 'stopping' | 'stopped' = 'idle';
  private readonly inFlight = new Set<Promise<unknown>>();
  private readonly stopping = new AbortController();
  private groupsReady = false;
  private discoveredAt = 0;
  private discovering: Promise<void> | undefined;
  private trimmedAt = 0;
  private forgotAt = 0;
  /** Resolved (and replaced) when the held partitions change: the reader waits on it when it holds none. */
  private ownershipChanged = signal();
  private lastRound: { share: number; members: number } = { share: 0, members: 0 };
  /** Partitions leased by processors of redsource 0.2 at the last round (said once per change). */
  private olderLeasesSeen = 0;
  /** What is left before `ready`: each stream prepared (group, partition count, cursors), and the first ownership round. */
  private unready = new Set<string>();

  constructor(options: StreamProcessorOptions) {
    super();
    this.settings = parseProcessorSettings(options);
    this.redis = options.redis;
    this.logger = options.logger ?? silentLogger;
    this.streamList = [...(options.streams ?? options.handlers.streams)];
    this.streamPrefixes = options.streamPrefixes ?? options.handlers.streamPrefixes;
    if (this.streamList.length === 0 && this.streamPrefixes.length === 0) {
      throw new ProcessorStateError(
        'No streams to process: register a handler (for a stream or a `<prefix>*`) or pass `streams`.',
      );
    }
    for (const stream of this.streamList) this.statsByStream.set(stream, emptyStreamStats());
    this.snapshots = options.snapshots;
    this.group = new ConsumerGroup(this.redis, this.settings);
    const attempts = (this.attempts = new HandlerAttempts(this.redis, this.settings.group, this.waits, this.logger));
    this.builder = new BatchBuilder(
      options.eventStore.codec,
      options.handlers,
      options.snapshots,
      this.settings,
      this.logger,
      attempts,
    );
    this.applier = new Applier(
      options.snapshots,
      this.settings,
      processorKeys.deadLetters,
      this.logger,
      this.waits,
      attempts,
    );
    const catalog = options.eventStore.catalog;
    this.partitionedStreams = new PartitionedStreams(this.redis, this.settings.group, this.settings.partitions);
    this.partitionOf = new PartitionFinder(this.settings.partitions, (stream) =>
      catalog.has(stream) ? catalog.subjectFields(stream) : [],
    );
    this.ownership = new PartitionOwnership(
      this.redis,
      this.settings.group,
      this.settings.consumer,
      this.settings.partitions,
      this.settings.leaseMs,
    );
  }

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

  /** Running, with its streams prepared (groups, cursors) and its share of the partitions taken. */
  get isReady(): boolean {
    return this.state === 'running' && this.unready.size === 0;
  }

  /**
   * Resolves once the processor is ready (see `isReady`, and the `ready` event); rejects with
   * ProcessorStartError on what retrying cannot cure (a refused login, a key of another type, a
   * partition count mismatch), after `startTimeoutMs`, or if stopped first. It does not stop the processor.
   */
  ready(): Promise<void> {
    return untilReady(this, this.settings.startTimeoutMs, this.stopping.signal);
  }

  /** The partitions of streams this processor holds now, with the fencing token of each; by stream, then partition. */
  get partitions(): readonly HeldPartitionInfo[] {
    return [...this.held.values()]
      .sort(byUnit)
      .map((p) => ({ stream: p.stream, partition: p.index, token: p.token, state: p.state }));
  }

  /** This processor's fair share of the units (streams x partitions), and the live processors of its group, at the last ownership round. */
  get share(): { readonly share: number; readonly members: number } {
    return this.lastRound;
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
    const loopWait = () => this.waits.get('read') ?? this.waits.get('ownership');
    return Object.fromEntries(
      [...this.statsByStream].map(([s, st]) => [s, { ...st, waiting: this.waits.get(s) ?? loopWait() }]),
    );
  }

  /**
   * Starts the loops and resolves; runs until stop(). Redis being away is not an error: groups are
   * created (and work taken up) as soon as it answers, retrying with backoff meanwhile.
   */
  async start(): Promise<void> {
    if (this.state !== 'idle')
      throw new ProcessorStateError(`start() called on a processor that is ${this.state}; create a new one.`);
    this.state = 'running';
    this.unready = new Set([OWNERSHIP_ROUND, ...this.streamList]);
    void this.heartbeat();
    this.heartbeatTimer = setInterval(() => void this.heartbeat(), this.settings.heartbeatMs);
    this.loops = [this.ownershipLoop()];
    for (const stream of this.streamList) this.startStreamLoops(stream);
    this.logger.info(
      {
        group: this.settings.group,
        consumer: this.settings.consumer,
        streams: this.streams,
        partitions: this.settings.partitions,
      },
      'processor started',
    );
  }

  /**
   * Finishes the batches in hand (bounded by shutdownTimeoutMs), gives its partitions back and
   * leaves the group, so the others take them over at their next round.
   */
  async stop(): Promise<void> {
    if (this.state !== 'running') return;
    this.state = 'stopping';
    this.stopRequestedAt = Date.now();
    this.stopping.abort();
    clearInterval(this.heartbeatTimer);
    this.signalOwnershipChanged();
    await Promise.all([...this.readers.values()].map((c) => (c.canWake ? c.wake() : c.close())));
    // Bounded: with Redis away, a loop may wait on a command that only fails after ioredis gives up.
    const settled = Promise.allSettled([...this.loops, ...this.inFlight]);
    const gaveUp = await within(settled, this.settings.shutdownTimeoutMs);
    if (gaveUp)
      this.logger.warn(
        { consumer: this.settings.consumer },
        'stop: the batch in hand did not finish in time; it is applied by the next holder of its partition',
      );
    else await within(this.handOver(), 2_000);
    this.held.clear();
    await Promise.all([...this.readers.values()].map((c) => c.close()));
    this.state = 'stopped';
    this.logger.info({ consumer: this.settings.consumer }, 'processor stopped');
  }

  /** Gives every held partition back and leaves the group (best effort: leases run out otherwise). */
  private async handOver(): Promise<void> {
    const held = [...this.held.values()];
    try {
      await this.ownership.release(
        held.map((p) => ({ ...unitOf(p), token: p.token })),
        true,
      );
      this.logger.info({ partitions: describeUnits(held) }, 'partitions handed over');
    } catch (error) {
      this.logger.warn({ err: String(error) }, 'could not hand the partitions over; their leases run out instead');
    }
  }

  private signalOwnershipChanged(): void {
    this.ownershipChanged.resolve();
    this.ownershipChanged = signal();
  }

  /** One discovery at a time: the loops calling it together (both at start) would each add a new stream. */
  private discover(): Promise<void> {
    this.discovering ??= this.discoverOnce().finally(() => {
      this.discovering = undefined;
    });
    return this.discovering;
  }

  /** Adds the streams that match a prefix and are not consumed yet, creating their groups. */
  private async discoverOnce(): Promise<void> {
    if (this.streamPrefixes.length === 0) return;
    this.discoveredAt = Date.now();
    const found = (await discoverStreams(this.redis, this.streamPrefixes)).filter((s) => !this.streamList.includes(s));
    if (found.length === 0) return;
    for (const stream of found) await this.ensureGroup(stream);
    // Their partitions are shared out from the next ownership round on.
    this.streamList.push(...found);
    for (const stream of found) this.startStreamLoops(stream);
    this.logger.info({ streams: found }, 'new streams matching a prefix');
  }

  private startStreamLoops(stream: string): void {
    const name = (role: string) => `redsource:${this.settings.consumer}:${role}:${stream}`.slice(0, 200);
    this.readers.set(stream, new BlockingConnection(this.redis, name('reader'), this.logger));
    this.loops.push(this.readLoop(stream));
  }

  private async wakeReaders(): Promise<void> {
    await Promise.all([...this.readers.values()].map((c) => c.wake()));
  }

  private async ensureGroups(): Promise<void> {
    if (this.groupsReady) return;
    await this.discover();
    for (const stream of this.streams) await this.ensureGroup(stream);
    this.groupsReady = true;
  }

  private async ensureGroup(stream: string): Promise<void> {
    const { adopted } = await this.partitionedStreams.prepare(
      stream,
      this.group.startId,
      this.snapshots.cursorKey(stream),
      (p) => this.snapshots.cursorKey(stream, p),
    );
    if (adopted)
      this.logger.info(
        { stream, cursor: adopted },
        'stream processed before partitions: every partition goes on from its applied position',
      );
    this.statsFor(stream);
    this.progressed(stream);
  }

  private async heartbeat(): Promise<void> {
    await this.group
      .heartbeat(this.stats())
      .catch((error: unknown) => this.logger.debug({ err: String(error) }, 'heartbeat failed'));
  }

  /** Every rebalanceIntervalMs: renew, take a fair share, give back what is beyond it. */
  private async ownershipLoop(): Promise<void> {
    let backoff = 100;
    while (this.state === 'running') {
      try {
        await this.ensureGroups();
        const round = await this.ownership.round([...this.streamList].sort());
        this.lastRound = { share: round.share, members: round.members };
        if (round.olderLeases > 0 && round.olderLeases !== this.olderLeasesSeen)
          this.logger.warn(
            { group: this.settings.group, partitions: round.olderLeases },
            "processors of redsource 0.2 still hold partitions of this group: stop them (this version leases each stream's partitions apart); until then this processor takes no partition",
          );
        this.olderLeasesSeen = round.olderLeases;
        await this.reconcile(round.held, round.share);
        this.progressed(OWNERSHIP_ROUND);
        if (this.streamPrefixes.length > 0 && Date.now() - this.discoveredAt >= this.settings.discoverIntervalMs)
          await this.discover();
        if (this.settings.retention && Date.now() - this.trimmedAt >= RETENTION_INTERVAL_MS) {
          this.trimmedAt = Date.now();
          for (const stream of this.streams)
            await trimApplied(this.redis, stream, this.snapshots, {
              group: this.settings.group,
              partitions: this.settings.partitions,
            });
        }
        if (Date.now() - this.forgotAt >= FORGET_SILENT_AFTER_MS) {
          this.forgotAt = Date.now();
          await this.group.forgetSilent(FORGET_SILENT_AFTER_MS);
        }
        this.waits.clear('ownership');
        backoff = 100;
        await sleep(this.settings.rebalanceIntervalMs, undefined, { signal: this.stopping.signal }).catch(
          () => undefined,
        );
      } catch (error) {
        if (this.state !== 'running') return;
        const unavailable = this.onLoopError(error, 'ownership');
        await sleep(backoff, undefined, { signal: this.stopping.signal }).catch(() => undefined);
        backoff = Math.min(backoff * 2, unavailable ? MAX_UNAVAILABLE_BACKOFF_MS : MAX_ERROR_BACKOFF_MS);
      }
    }
  }

  /** Brings the held partitions in line with a round's answer. */
  private async reconcile(leases: ReadonlyMap<string, HeldLease>, share: number): Promise<void> {
    let changed = false;
    const change = { taken: [] as PartitionUnit[], lost: [] as PartitionUnit[], draining: [] as PartitionUnit[] };
    // Lost: the lease ran out (a pause, Redis away) and another holds it now, or it is free again.
    for (const [key, partition] of this.held) {
      if (leases.get(key)?.token === partition.token) continue;
      this.held.delete(key);
      change.lost.push(unitOf(partition));
      changed = true;
      this.logger.warn(
        { stream: partition.stream, partition: partition.index },
        'partition lease lost; another processor takes it over',
      );
    }
    for (const [key, lease] of leases) {
      if (this.held.has(key) || this.releasing.has(key)) continue;
      let partition: HeldPartition;
      try {
        partition = await this.take(lease);
      } catch (error) {
        if (!String(error).includes(PARTITION_LOST)) throw error;
        await this.ownership.release([lease], false);
        continue;
      }
      this.held.set(key, partition);
      this.statsFor(lease.stream).claimed++;
      change.taken.push(unitOf(partition));
      changed = true;
      this.logger.info({ stream: lease.stream, partition: lease.partition, token: lease.token }, 'partition taken');
    }
    // Beyond the fair share (a processor joined): the last units (by stream, then partition) go back
    // once their batch is done, so what is kept stays on as few streams as it can.
    const active = [...this.held.values()].filter((p) => p.state === 'active').sort(byUnit);
    const excess = active.length - share;
    for (const partition of excess > 0 ? active.slice(-excess) : []) {
      partition.state = 'draining';
      change.draining.push(unitOf(partition));
      changed = true;
      void this.track(this.release(partition));
    }
    if (changed) {
      this.partitionsChanged(change);
      this.signalOwnershipChanged();
      await this.wakeReaders();
    }
  }

  /** Claims a leased partition of a stream (its epoch): it is read from where it is applied up to. */
  private async take(lease: HeldLease): Promise<HeldPartition> {
    const cursor = await this.ownership.take(
      partitionKeys.epoch(lease.stream, this.settings.group, lease.partition),
      this.snapshots.cursorKey(lease.stream, lease.partition),
      lease.token,
    );
    return {
      stream: lease.stream,
      index: lease.partition,
      token: lease.token,
      state: 'active',
      readFrom: cursor,
      appliedThrough: cursor,
      stored: { cursor, at: Date.now() },
      generation: 0,
      tail: Promise.resolve(),
      busy: new Set(),
    };
  }

  private async release(partition: HeldPartition): Promise<void> {
    await Promise.allSettled([...partition.busy]);
    const key = unitKey(partition.stream, partition.index);
    if (this.held.get(key) !== partition) return;
    this.held.delete(key);
    this.releasing.add(key);
    const unit = unitOf(partition);
    try {
      await this.ownership.release([{ ...unit, token: partition.token }], false);
      this.logger.info(unit, 'partition handed over');
      this.partitionsChanged({ released: [unit] });
    } catch (error) {
      this.logger.warn({ ...unit, err: String(error) }, 'could not hand a partition over; its lease runs out instead');
    } finally {
      this.releasing.delete(key);
    }
  }

  /** Waits until the held partitions change, or blockMs. */
  private async untilOwnershipChanges(): Promise<void> {
    const bound = new AbortController();
    await Promise.race([
      this.ownershipChanged.promise,
      sleep(this.settings.blockMs, undefined, { signal: bound.signal }).catch(() => undefined),
    ]);
    bound.abort();
  }

  /**
   * Reads one stream (one XREAD BLOCK) from where the partitions held are read up to, and queues
   * the entries of each held partition as a batch, partitions in parallel. The next read goes out
   * while those batches apply (at most two reads' batches in flight), so decoding one read overlaps
   * applying the one before. An idle partition's cursor follows at most once a second while
   * entries arrive, and as soon as none arrive for blockMs.
   */
  private async readLoop(stream: string): Promise<void> {
    let backoff = 100;
    let applying: Promise<void>[] = [];
    while (this.state === 'running') {
      try {
        const reading = [...this.held.values()].filter((p) => p.state === 'active' && p.stream === stream);
        if (reading.length === 0) {
          await this.untilOwnershipChanges();
          continue;
        }
        const connection = this.readers.get(stream)?.connection;
        if (!connection || this.state !== 'running') break;
        const generations = reading.map((p) => p.generation);
        const positions = reading.map((p) => p.readFrom);
        const from = positions.reduce((min, id) => (compareEntryIds(id, min) < 0 ? id : min));
        // A read that cannot be woken (Redis Cluster) blocks no longer than a round, so new partitions are read soon.
        const blockMs =
          this.readers.get(stream)?.canWake === false
            ? Math.min(this.settings.blockMs, this.settings.rebalanceIntervalMs)
            : this.settings.blockMs;
        // Enough for a full batch per partition held, whatever share of the stream they are.
        const count = Math.min(this.settings.batchSize * this.settings.partitions, MAX_READ);
        // As bytes: only the entries of partitions held are decoded to text (and only the subject of the others).
        const raw = readEntries(
          await connection.xreadBuffer('COUNT', count, 'BLOCK', blockMs, 'STREAMS', stream, from),
        );
        if (raw.length === 0) {
          // Nothing new for blockMs: write the cursors idle partitions have read past, so what
          // status, retention and read-your-writes see settles.
          const before = applying;
          applying = [];
          await allSettledOrThrow([...before, ...this.writeIdleCursors(stream, reading, generations)]);
          continue;
        }
        const through = (raw[raw.length - 1] as RawEntry)[0].toString('latin1');
        // Decoded only for the partitions this read is for (not those held but draining).
        const wanted = new Set(reading.map((p) => p.index));
        const byPartition = new Map<number, StreamEntry[]>();
        for (const [id, fields] of raw) {
          const index = this.partitionOf.rawEntry(stream, fields);
          let mine = byPartition.get(index);
          if (!mine) {
            if (!wanted.has(index)) continue;
            byPartition.set(index, (mine = []));
          }
          mine.push({ id: id.toString('latin1'), fields: fields.map((f) => f.toString()) });
        }
        const work: Promise<void>[] = [];
        for (const [i, partition] of reading.entries()) {
          const position = positions[i] as string;
          // Dropped: the partition went (lost, draining) or its read position was reset meanwhile.
          if (!this.reads(partition, generations[i] as number, position)) continue;
          if (compareEntryIds(through, position) <= 0) continue;
          const after = (byPartition.get(partition.index) ?? []).filter((e) => compareEntryIds(e.id, position) > 0);
          partition.readFrom = through;
          work.push(
            this.enqueue(partition, position, async () => {
              if (after.length === 0 && Date.now() - partition.stored.at < IDLE_CURSOR_EVERY_MS) {
                // Nothing of this partition up to `through`: the cursor follows later.
                partition.appliedThrough = through;
                return;
              }
              await this.processPartition(partition, stream, after, through);
            }),
          );
        }
        // The batches of the read before settle now, while this read's apply: a failure stops
        // the loop one read later, and the batches queued after it are dropped (their partition's
        // read position is reset, see enqueue).
        const before = applying;
        applying = work;
        await allSettledOrThrow(before);
        this.waits.clear('read');
        backoff = 100;
      } catch (error) {
        if (this.state !== 'running') return;
        const unavailable = this.onLoopError(error, 'read');
        await sleep(backoff, undefined, { signal: this.stopping.signal }).catch(() => undefined);
        backoff = Math.min(backoff * 2, unavailable ? MAX_UNAVAILABLE_BACKOFF_MS : MAX_ERROR_BACKOFF_MS);
      }
    }
  }

  /** Queues a cursor move for each partition applied past its stored cursor (entries of other partitions only). */
  private writeIdleCursors(
    stream: string,
    reading: readonly HeldPartition[],
    generations: readonly number[],
  ): Promise<void>[] {
    const work: Promise<void>[] = [];
    for (const [i, partition] of reading.entries()) {
      if (!this.reads(partition, generations[i] as number, partition.readFrom)) continue;
      if (compareEntryIds(partition.readFrom, partition.stored.cursor) <= 0) continue;
      work.push(
        this.enqueue(partition, partition.readFrom, () =>
          compareEntryIds(partition.appliedThrough, partition.stored.cursor) > 0
            ? this.processPartition(partition, stream, [], partition.appliedThrough)
            : Promise.resolve(),
        ),
      );
    }
    return work;
  }

  /** Whether a read sent for `partition` at `generation` from `position` still counts: held, active, not reset since. */
  private reads(partition: HeldPartition, generation: number, position: string): boolean {
    return (
      this.holds(partition) &&
      partition.state === 'active' &&
      partition.generation === generation &&
      partition.readFrom === position
    );
  }

  /**
   * Queues a batch of a partition read from `start`: it runs once the batches queued before it
   * are done, and only if they applied everything up to `start` (one that failed, or that stop()
   * cut short, leaves `appliedThrough` behind it: then this one is dropped, and the entries are
   * read again from the cursor).
   */
  private enqueue(partition: HeldPartition, start: string, batch: () => Promise<void>): Promise<void> {
    const generation = partition.generation;
    const queued = partition.tail.then(async () => {
      if (!this.holds(partition) || partition.generation !== generation || partition.appliedThrough !== start) return;
      await batch();
    });
    partition.tail = queued.catch(() => undefined);
    partition.busy.add(queued);
    const settled = () => void partition.busy.delete(queued);
    queued.then(settled, settled);
    void this.track(queued).catch(() => undefined);
    return queued;
  }

  /**
   * Reads the partition's entries of the stream again from where it is applied: what was read but
   * not applied is not lost. Everything changes in one step once the cursor is read, so a read or
   * a batch of before cannot be taken for one of after.
   */
  private async resetReadPosition(partition: HeldPartition): Promise<void> {
    // Redis not answering: the cursor as last written is safe too (the apply script skips what is at or below its own).
    const cursor = await this.snapshots.cursor(partition.stream, partition.index).catch(() => partition.stored.cursor);
    partition.generation++;
    partition.readFrom = cursor;
    partition.appliedThrough = cursor;
    partition.stored = { cursor, at: Date.now() };
  }

  /** Whether `partition` is still held (not lost, nor released and taken again since). */
  private holds(partition: HeldPartition): boolean {
    return this.held.get(unitKey(partition.stream, partition.index)) === partition;
  }

  /**
   * Applies one partition's entries of one read, from its stored cursor (everything of it between
   * that and `appliedThrough` is applied) up to `through` (no entries: its cursor only moves);
   * a partition found taken over is dropped.
   */
  private async processPartition(
    partition: HeldPartition,
    stream: string,
    entries: readonly StreamEntry[],
    through: string,
  ): Promise<void> {
    try {
      // At most batchSize entries per apply call (one call holds Redis for its whole run).
      let from = partition.stored.cursor;
      for (let start = 0; start === 0 || start < entries.length; start += this.settings.batchSize) {
        const chunk = entries.slice(start, start + this.settings.batchSize);
        const last = start + this.settings.batchSize >= entries.length;
        const upTo = last ? through : (chunk[chunk.length - 1] as StreamEntry).id;
        // Cut short by stop(): the rest is read again by whoever holds the partition next.
        if (!(await this.process(stream, partition, chunk, from, upTo))) return;
        partition.appliedThrough = upTo;
        partition.stored = { cursor: upTo, at: Date.now() };
        from = upTo;
      }
    } catch (error) {
      if (String(error).includes(PARTITION_LOST)) {
        if (this.holds(partition)) this.held.delete(unitKey(stream, partition.index));
        this.partitionsChanged({ lost: [unitOf(partition)] });
        this.logger.warn(
          { stream, partition: partition.index },
          'partition claimed by another processor (this one was paused past its lease): dropped, nothing applied',
        );
        return;
      }
      if (String(error).includes(PARTITION_GAP))
        this.logger.warn(
          { stream, partition: partition.index, err: String(error) },
          'partition cursor moved under this processor: reading on from it',
        );
      await this.resetReadPosition(partition);
      if (!String(error).includes(PARTITION_GAP)) throw error;
    }
  }

  /** Returns false when stopping cut it short. */
  private async process(
    stream: string,
    partition: HeldPartition,
    entries: readonly StreamEntry[],
    cursor: string,
    through: string,
  ): Promise<boolean> {
    const stats = this.statsFor(stream);
    const observed = entries.length > 0 && this.listenerCount('batch') + this.listenerCount('deadLetter') > 0;
    const started = observed ? performance.now() : 0;
    const batch =
      entries.length === 0 ? [] : await this.builder.build(stream, entries, { signal: this.stopping.signal });
    const outcome = await this.applier.apply(stream, batch, {
      group: this.settings.group,
      stats,
      stopRequestedAt: () => this.stopRequestedAt,
      partition: { index: partition.index, readFrom: cursor, readThrough: through },
      fence: {
        key: partitionKeys.epoch(stream, this.settings.group, partition.index),
        token: partition.token,
        code: PARTITION_LOST,
      },
    });
    if (!outcome.complete) return false;
    if (entries.length > 0) {
      this.logger.debug(
        {
          stream,
          partition: partition.index,
          first: entries[0]?.id,
          count: entries.length,
          applied: outcome.applied,
          skipped: outcome.skipped,
          deadLettered: outcome.deadLettered,
        },
        'batch applied',
      );
    }
    if (observed)
      reportBatch(this, {
        stream,
        partition: partition.index,
        entries,
        batch,
        outcome,
        durationMs: performance.now() - started,
      });
    return true;
  }

  /** A step towards `ready` is done; the last one emits it. */
  private progressed(step: string): void {
    if (this.unready.delete(step) && this.unready.size === 0) this.emit('ready');
  }

  private partitionsChanged(change: Partial<Omit<PartitionsChangedEvent, 'held'>>): void {
    if (this.listenerCount('partitionsChanged') === 0) return;
    const held = [...this.held.values()].sort(byUnit).map(unitOf);
    this.emit('partitionsChanged', { held, taken: [], draining: [], released: [], lost: [], ...change });
  }

  /** Records a loop's failure; returns whether it is Redis refusing or unreachable (then the loop waits, and says so). */
  private onLoopError(error: unknown, source: 'read' | 'ownership'): boolean {
    const message = error instanceof Error ? error.message : String(error);
    const noted = this.waits.note(source, error);
    const unavailable = noted !== undefined;
    const waiting = unavailable ? this.waits.get(source)?.reason : undefined;
    for (const stats of this.statsByStream.values()) {
      stats.lastError = waiting ?? message;
      stats.lastErrorAt = Date.now();
    }
    if (waiting) {
      this.logger.debug({ err: message }, 'processor loop: Redis unavailable');
      if (noted === 'new') this.logger.warn({ waiting }, 'processor waiting on Redis; retrying');
    } else {
      this.logger.warn({ err: message, loop: source }, 'processor loop error; retrying');
    }
    if (this.listenerCount('error') > 0)
      this.emit('error', new ProcessorLoopError(source, error, this.waits.get(source)));
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

function unitOf(partition: HeldPartition): PartitionUnit {
  return { stream: partition.stream, partition: partition.index };
}

/** By stream, then partition: the order of the units in rebalance.lua. */
function byUnit(a: HeldPartition, b: HeldPartition): number {
  return a.stream < b.stream ? -1 : a.stream > b.stream ? 1 : a.index - b.index;
}

/** For a log line: `{ stream: [partitions] }`. */
function describeUnits(units: readonly HeldPartition[]): Record<string, number[]> {
  const out: Record<string, number[]> = Object.create(null) as Record<string, number[]>;
  for (const u of [...units].sort(byUnit)) (out[u.stream] ??= []).push(u.index);
  return out;
}

/** A promise with its resolve function (Promise.withResolvers is Node 22+). */
function signal(): { promise: Promise<void>; resolve: () => void } {
  let resolve = () => {};
  const promise = new Promise<void>((r) => (resolve = r));
  return { promise, resolve };
}

/** The step of `ready` that is the first ownership round (the others are the stream names). */
const OWNERSHIP_ROUND = '\u0000ownership';

/** A processor silent this long is dropped from `status` (its partitions moved on long before). */
const FORGET_SILENT_AFTER_MS = 10 * 60_000;

/** Retention trims at most this often. */
const RETENTION_INTERVAL_MS = 5_000;

/** One entry of an XREAD reply read as bytes: its id and its field/value items. */
type RawEntry = [Buffer, Buffer[]];

/** The entries of a one-stream XREAD reply read as bytes (none when it timed out). */
function readEntries(reply: [Buffer, RawEntry[]][] | null): RawEntry[] {
  return reply?.[0]?.[1] ?? [];
}

/** Waits for every promise to settle, then throws the first failure, if any. */
async function allSettledOrThrow(work: readonly Promise<unknown>[]): Promise<void> {
  const failed = (await Promise.allSettled(work)).find((r) => r.status === 'rejected');
  if (failed) throw failed.reason;
}

/** Resolves true if `promise` did not settle within `ms`; leaves no timer behind. */
async function within(promise: Promise<unknown>, ms: number): Promise<boolean> {
  const deadline = new AbortController();
  const timedOut = sleep(ms, true, { signal: deadline.signal }).catch(() => false);
  const gaveUp = await Promise.race([promise.then(() => false), timedOut]);
  deadline.abort();
  return gaveUp;
}
