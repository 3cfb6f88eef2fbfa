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

export interface OwnershipRound {
  /** This processor's fair share of the partitions. */
  readonly share: number;
  /** Live processors in the group, this one included. */
  readonly members: number;
  /** Partitions held now → the fencing token of each lease. */
  readonly held: ReadonlyMap<number, string>;
}

/**
 * Which partitions this processor holds (rebalance.lua): one round trip per round says it is alive,
 * renews its leases and takes free partitions up to its fair share. What it holds beyond its share
 * it gives back with release() once their batches are done: cooperative, only moved partitions pause.
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

  async round(stopping = false): Promise<OwnershipRound> {
    const keys = [partitionKeys.members(this.group)];
    for (let p = 0; p < this.partitions; p++) keys.push(partitionKeys.lease(this.group, p));
    for (let p = 0; p < this.partitions; p++) keys.push(partitionKeys.fence(this.group, p));
    const reply = await this.redis.redsourceRebalance(
      keys.length,
      ...keys,
      this.me,
      this.leaseMs,
      this.partitions,
      stopping ? '1' : '0',
    );
    const held = new Map<number, string>();
    for (let i = 2; i + 1 < reply.length; i += 2) held.set(Number(reply[i]), String(reply[i + 1]));
    return { share: Number(reply[0]), members: Number(reply[1]), held };
  }

  /** Gives leases back (each only while it still holds our token); `leave` also leaves the group. */
  async release(partitions: ReadonlyMap<number, string>, leave: boolean): Promise<number> {
    const keys = [partitionKeys.members(this.group)];
    const tokens: string[] = [];
    for (const [p, token] of partitions) {
      keys.push(partitionKeys.lease(this.group, p));
      tokens.push(token);
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
