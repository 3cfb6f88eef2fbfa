import type { Redis } from 'ioredis';
import { processorKeys } from './keys.ts';
import type { ProcessorSettings } from './options.ts';

/**
 * The consumer-group commands the processor uses, in one place. The group on a source stream is
 * how far the stream is routed into partitions (route.lua reads it with XREADGROUP and acks at
 * once); processors publish their counters beside it for `status`.
 */
export class ConsumerGroup {
  constructor(
    private readonly redis: Redis,
    private readonly settings: ProcessorSettings,
  ) {}

  get name(): string {
    return this.settings.group;
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
