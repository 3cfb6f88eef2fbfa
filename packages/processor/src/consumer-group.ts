import type { Redis } from 'ioredis';
import { parseXReadReply, toStreamEntries, type StreamEntry } from '@redsource/event-store';
import { processorKeys } from './keys.ts';
import { toObject } from './replies.ts';
import type { ProcessorSettings } from './options.ts';

export interface ClaimResult {
  readonly entries: StreamEntry[];
  /** Ids that were pending but are gone from the stream; Redis removes them from the pending list. */
  readonly deletedIds: string[];
  readonly next: string;
}

/** The consumer-group commands the processor uses, in one place. */
export class ConsumerGroup {
  constructor(
    private readonly redis: Redis,
    private readonly settings: ProcessorSettings,
  ) {}

  get name(): string {
    return this.settings.group;
  }

  get consumer(): string {
    return this.settings.consumer;
  }

  /** Creates the group (and the stream) if missing; returns whether it was created now. */
  async ensure(stream: string): Promise<boolean> {
    const start = this.settings.start;
    const id = start === 'beginning' ? '0' : start === 'latest' ? '$' : start.after;
    try {
      await this.redis.xgroup('CREATE', stream, this.settings.group, id, 'MKSTREAM');
      return true;
    } catch (error) {
      if (error instanceof Error && error.message.includes('BUSYGROUP')) return false;
      throw error;
    }
  }

  /** The id the group has delivered up to. */
  async lastDeliveredId(stream: string): Promise<string> {
    const groups = (await this.redis.xinfo('GROUPS', stream)) as unknown[][];
    for (const group of groups) {
      const info = toObject(group);
      if (info['name'] === this.settings.group) return String(info['last-delivered-id']);
    }
    return '0-0';
  }

  /** New entries for this consumer, blocking up to blockMs. `reader` is the blocking connection. */
  async readNew(reader: Redis, streams: readonly string[]): Promise<{ stream: string; entries: StreamEntry[] }[]> {
    const reply = await reader.xreadgroup(
      'GROUP', this.settings.group, this.settings.consumer,
      'COUNT', this.settings.batchSize, 'BLOCK', this.settings.blockMs,
      'STREAMS', ...streams, ...streams.map(() => '>'),
    );
    return parseXReadReply(reply);
  }

  /** This consumer's own pending entries after `afterId` (re-read after a restart, before new ones). */
  async readOwnPending(stream: string, afterId: string): Promise<StreamEntry[]> {
    const reply = await this.redis.xreadgroup(
      'GROUP', this.settings.group, this.settings.consumer, 'COUNT', this.settings.batchSize, 'STREAMS', stream, afterId,
    );
    return parseXReadReply(reply)[0]?.entries ?? [];
  }

  /** Takes over entries idle longer than claimTimeoutMs (their consumer is presumed dead). */
  async claim(stream: string, from: string): Promise<ClaimResult> {
    const reply = (await this.redis.xautoclaim(
      stream, this.settings.group, this.settings.consumer, this.settings.claimTimeoutMs, from, 'COUNT', this.settings.batchSize,
    )) as [string, unknown, string[] | undefined];
    const entries = toStreamEntries(reply[1]);
    return { next: reply[0], entries: entries.filter((e) => e.fields.length > 0), deletedIds: reply[2] ?? [] };
  }

  async ack(stream: string, ids: readonly string[]): Promise<void> {
    if (ids.length > 0) await this.redis.xack(stream, this.settings.group, ...ids);
  }

  /** Says this consumer is alive, and publishes its counters for `status` in the same round trip. */
  async heartbeat(stats: Readonly<Record<string, unknown>>): Promise<void> {
    await this.redis
      .multi()
      .hset(processorKeys.heartbeats(this.settings.group), this.settings.consumer, Date.now())
      .hset(processorKeys.consumerStats(this.settings.group), this.settings.consumer, JSON.stringify(stats))
      .exec();
  }

  /** Removes consumers that are silent past claimTimeoutMs and have nothing pending; returns their names. */
  async removeDeadConsumers(stream: string): Promise<string[]> {
    const heartbeatsKey = processorKeys.heartbeats(this.settings.group);
    const [consumers, heartbeats] = await Promise.all([
      this.redis.xinfo('CONSUMERS', stream, this.settings.group) as Promise<unknown[][]>,
      this.redis.hgetall(heartbeatsKey),
    ]);
    const now = Date.now();
    const removed: string[] = [];
    for (const row of consumers) {
      const info = toObject(row);
      const name = String(info['name']);
      if (name === this.settings.consumer || Number(info['pending']) > 0) continue;
      const lastBeat = Number(heartbeats[name] ?? 0);
      if (now - lastBeat < this.settings.claimTimeoutMs || Number(info['idle']) < this.settings.claimTimeoutMs) continue;
      await this.redis.xgroup('DELCONSUMER', stream, this.settings.group, name);
      removed.push(name);
    }
    return removed;
  }

  async forgetDeadHeartbeats(names: readonly string[]): Promise<void> {
    if (names.length === 0) return;
    await this.redis
      .multi()
      .hdel(processorKeys.heartbeats(this.settings.group), ...names)
      .hdel(processorKeys.consumerStats(this.settings.group), ...names)
      .exec();
  }
}
