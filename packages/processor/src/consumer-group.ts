import type { Redis } from 'ioredis';
import { processorKeys } from './keys.ts';
import type { ProcessorSettings } from './options.ts';

/**
 * The consumer-group commands the processor uses, in one place. The group on a source stream marks
 * where the projection starts (prepare-stream.lua creates it); processors publish their liveness
 * and counters beside it for `status`.
 */
export class ConsumerGroup {
  constructor(
    private readonly redis: Redis,
    private readonly settings: ProcessorSettings,
  ) {}

  get name(): string {
    return this.settings.group;
  }

  /** Where a new group starts (XGROUP CREATE): the beginning, after the last entry, or after an id. */
  get startId(): string {
    const start = this.settings.start;
    return start === 'beginning' ? '0' : start === 'latest' ? '$' : start.after;
  }

  /** Says this consumer is alive, and publishes its counters for `status` in the same round trip (both keys share a slot). */
  async heartbeat(stats: Readonly<Record<string, unknown>>): Promise<void> {
    await this.redis
      .multi()
      .hset(processorKeys.heartbeats(this.settings.group), this.settings.consumer, Date.now())
      .hset(processorKeys.consumerStats(this.settings.group), this.settings.consumer, JSON.stringify(stats))
      .exec();
  }

  /** Forgets the heartbeats and counters of processors silent for longer than `silentMs`; returns their names. */
  async forgetSilent(silentMs: number): Promise<string[]> {
    const beats = await this.redis.hgetall(processorKeys.heartbeats(this.settings.group));
    const now = Date.now();
    const silent = Object.entries(beats)
      .filter(([name, at]) => name !== this.settings.consumer && now - Number(at) > silentMs)
      .map(([name]) => name);
    if (silent.length === 0) return [];
    await this.redis
      .multi()
      .hdel(processorKeys.heartbeats(this.settings.group), ...silent)
      .hdel(processorKeys.consumerStats(this.settings.group), ...silent)
      .exec();
    return silent;
  }
}
