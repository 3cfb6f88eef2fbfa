import type { Redis, Result } from 'ioredis';
import { processorScript } from '../scripts.ts';
import { partitionKeys } from './keys.ts';

declare module 'ioredis' {
  interface RedisCommander<Context> {
    redsourcePrepareStream(numKeys: number, ...keysAndArgs: (string | number)[]): Result<[number, string], Context>;
  }
}

const prepareSource = processorScript('prepare-stream.lua');

/**
 * Gets a source stream ready for a group's partitioned processing: its consumer group (where the
 * projection starts), the partition count, a cursor per partition. Nothing is copied anywhere: each
 * processor reads the stream itself and applies the entries of the partitions it holds.
 */
export class PartitionedStreams {
  constructor(
    private readonly redis: Redis,
    private readonly group: string,
    private readonly partitions: number,
  ) {
    if (typeof (redis as Partial<Redis>).redsourcePrepareStream !== 'function')
      redis.defineCommand('redsourcePrepareStream', { lua: prepareSource });
  }

  /**
   * Creates the group if missing (at `start`: '0', '$' or an entry id), fixes the partition count
   * (RS_PARTITIONS_MISMATCH if another was used) and gives every partition a cursor. A stream
   * processed before partitions (one cursor for the stream: `oldCursorKey`) goes on from there, once.
   * Returns the adopted old cursor, if any.
   */
  async prepare(
    stream: string,
    start: string,
    oldCursorKey: string,
    partitionCursorKey: (partition: number) => string,
  ): Promise<{ adopted: string | undefined }> {
    const keys = [stream, partitionKeys.count(stream, this.group), oldCursorKey];
    for (let p = 0; p < this.partitions; p++) keys.push(partitionCursorKey(p));
    const [, adopted] = await this.redis.redsourcePrepareStream(
      keys.length,
      ...keys,
      this.group,
      this.partitions,
      start,
    );
    return { adopted: adopted === '' ? undefined : adopted };
  }
}
