import type { Redis, Result } from 'ioredis';
import { processorScript } from '../scripts.ts';
import { partitionKeys } from './keys.ts';

declare module 'ioredis' {
  interface RedisCommander<Context> {
    redsourceRoute(numKeys: number, ...keysAndArgs: (string | number)[]): Result<[number, string], Context>;
    redsourceAdoptStreamCursor(numKeys: number, ...keysAndArgs: (string | number)[]): Result<string, Context>;
  }
}

const routeSource = processorScript('route.lua');
const adoptSource = processorScript('adopt-stream-cursor.lua');

/** Entries moved per route call: the script holds Redis for ~1 ms per thousand. */
export const ROUTE_CHUNK = 1_000;

export interface RouteResult {
  readonly routed: number;
  /** How far the stream is routed now (the group's last-delivered-id). */
  readonly routedTo: string;
}

/**
 * Moves new entries of a source stream into the group's partition streams (route.lua): exactly
 * once, whoever calls it, so every processor of the group may route and none waits for a router.
 */
export class PartitionRouter {
  constructor(
    private readonly redis: Redis,
    private readonly group: string,
    private readonly partitions: number,
    private readonly subjectFields: (stream: string) => readonly string[],
  ) {
    if (typeof (redis as Partial<Redis>).redsourceRoute !== 'function') redis.defineCommand('redsourceRoute', { lua: routeSource });
    if (typeof (redis as Partial<Redis>).redsourceAdoptStreamCursor !== 'function') redis.defineCommand('redsourceAdoptStreamCursor', { lua: adoptSource });
  }

  /**
   * A stream processed before partitions (one cursor for the stream: `oldCursorKey`) goes on from
   * there, once (adopt-stream-cursor.lua): nothing applied is applied again, nothing delivered to a
   * consumer of the old kind and left unacked is lost. Returns the adopted cursor, or undefined.
   */
  async adoptStreamCursor(stream: string, oldCursorKey: string, partitionCursorKey: (partition: number) => string): Promise<string | undefined> {
    const keys = [stream, oldCursorKey];
    for (let p = 0; p < this.partitions; p++) keys.push(partitionCursorKey(p));
    const adopted = await this.redis.redsourceAdoptStreamCursor(keys.length, ...keys, this.group);
    return adopted === '' ? undefined : adopted;
  }

  async route(stream: string, max = ROUTE_CHUNK): Promise<RouteResult> {
    const keys = [stream, partitionKeys.count(stream, this.group)];
    for (let p = 0; p < this.partitions; p++) keys.push(partitionKeys.stream(stream, this.group, p));
    const [routed, routedTo] = await this.redis.redsourceRoute(keys.length, ...keys, this.group, max, this.partitions, JSON.stringify(this.subjectFields(stream)));
    return { routed, routedTo };
  }
}
