import { readFileSync } from 'node:fs';
import type { Redis, Result } from 'ioredis';
import { partitionKeys } from './keys.ts';

declare module 'ioredis' {
  interface RedisCommander<Context> {
    redsourceRoute(numKeys: number, ...keysAndArgs: (string | number)[]): Result<[number, string], Context>;
  }
}

const routeSource = readFileSync(new URL('../scripts/route.lua', import.meta.url), 'utf8');

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
  }

  async route(stream: string, max = ROUTE_CHUNK): Promise<RouteResult> {
    const keys = [stream, partitionKeys.count(stream, this.group)];
    for (let p = 0; p < this.partitions; p++) keys.push(partitionKeys.stream(stream, this.group, p));
    const [routed, routedTo] = await this.redis.redsourceRoute(keys.length, ...keys, this.group, max, this.partitions, JSON.stringify(this.subjectFields(stream)));
    return { routed, routedTo };
  }
}
