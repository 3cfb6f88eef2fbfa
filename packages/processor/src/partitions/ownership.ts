import type { Redis, Result } from 'ioredis';
import { processorScript } from '../scripts.ts';
import { partitionKeys } from './keys.ts';

declare module 'ioredis' {
  interface RedisCommander<Context> {
    redsourceRebalance(numKeys: number, ...keysAndArgs: (string | number)[]): Result<(number | string)[], Context>;
    redsourceReleasePartitions(numKeys: number, ...keysAndArgs: (string | number)[]): Result<number, Context>;
    redsourceTakePartition(epoch: string, cursor: string, token: string): Result<string, Context>;
  }
}

const script = processorScript;

/** One partition of one stream: the unit of ownership. */
export interface PartitionUnit {
  readonly stream: string;
  readonly partition: number;
}

/** A unit as a map key. */
export function unitKey(stream: string, partition: number): string {
  return `${partition}\u0000${stream}`;
}

export interface HeldLease extends PartitionUnit {
  /** The fencing token of the lease. */
  readonly token: string;
}

export interface OwnershipRound {
  /** This processor's fair share of the units (streams x partitions). */
  readonly share: number;
  /** Live processors in the group, this one included. */
  readonly members: number;
  /** Units held now, by unitKey(). */
  readonly held: ReadonlyMap<string, HeldLease>;
  /** Partitions still leased by processors of redsource 0.2: while any is, nothing new is taken. */
  readonly olderLeases: number;
}

/**
 * Which partitions of which streams this processor holds (rebalance.lua): one round trip per round
 * says it is alive, renews its leases and takes free ones up to its fair share. What it holds
 * beyond its share it gives back with release() once their batches are done: cooperative, only
 * moved partitions pause.
 */
export class PartitionOwnership {
  constructor(
    private readonly redis: Redis,
    private readonly group: string,
    private readonly me: string,
    private readonly partitions: number,
    private readonly leaseMs: number,
  ) {
    const commands = {
      redsourceRebalance: { lua: script('rebalance.lua') },
      redsourceReleasePartitions: { lua: script('release-partitions.lua') },
      redsourceTakePartition: { numberOfKeys: 2, lua: script('take-partition-2.lua') },
    };
    for (const [name, definition] of Object.entries(commands)) {
      if (typeof (redis as unknown as Record<string, unknown>)[name] !== 'function')
        redis.defineCommand(name, definition);
    }
  }

  /** A round over `streams` (in the order given: the group's processors must give the same order, so sorted). */
  async round(streams: readonly string[], stopping = false): Promise<OwnershipRound> {
    const keys = [partitionKeys.members(this.group)];
    for (const stream of streams)
      for (let p = 0; p < this.partitions; p++) keys.push(partitionKeys.lease(this.group, stream, p));
    for (let p = 0; p < this.partitions; p++) keys.push(partitionKeys.fence(this.group, p));
    for (let p = 0; p < this.partitions; p++) keys.push(partitionKeys.olderLease(this.group, p));
    const reply = await this.redis.redsourceRebalance(
      keys.length,
      ...keys,
      this.me,
      this.leaseMs,
      this.partitions,
      stopping ? '1' : '0',
    );
    const held = new Map<string, HeldLease>();
    for (let i = 3; i + 1 < reply.length; i += 2) {
      const unit = Number(reply[i]);
      const stream = streams[Math.floor(unit / this.partitions)] as string;
      const partition = unit % this.partitions;
      held.set(unitKey(stream, partition), { stream, partition, token: String(reply[i + 1]) });
    }
    return { share: Number(reply[0]), members: Number(reply[1]), olderLeases: Number(reply[2]), held };
  }

  /** Gives leases back (each only while it still holds our token); `leave` also leaves the group. */
  async release(leases: Iterable<HeldLease>, leave: boolean): Promise<number> {
    const keys = [partitionKeys.members(this.group)];
    const tokens: string[] = [];
    for (const lease of leases) {
      keys.push(partitionKeys.lease(this.group, lease.stream, lease.partition));
      tokens.push(lease.token);
    }
    return this.redis.redsourceReleasePartitions(keys.length, ...keys, this.me, leave ? '1' : '0', ...tokens);
  }

  /**
   * Claims a partition of one stream with a lease's token (take-partition-2.lua) and returns where
   * it is applied up to; throws RS_PARTITION_LOST when a later holder has claimed it.
   */
  async take(epochKey: string, cursorKey: string, token: string): Promise<string> {
    return this.redis.redsourceTakePartition(epochKey, cursorKey, token);
  }
}
