import { readFileSync } from 'node:fs';
import type { Redis, Result } from 'ioredis';

declare module 'ioredis' {
  interface RedisCommander<Context> {
    redsourceAppend(
      stream: string,
      versions: string,
      eventIds: string,
      eventIdsByAge: string,
      ...args: (string | number)[]
    ): Result<unknown[], Context>;
  }
}

const appendSource = readFileSync(new URL('./scripts/append-4.lua', import.meta.url), 'utf8');

/** Registers the store's Lua scripts on a client once (EVALSHA, EVAL fallback; usable in pipelines). */
export function defineEventStoreScripts(redis: Redis): void {
  if (typeof (redis as Partial<Redis>).redsourceAppend === 'function') return;
  redis.defineCommand('redsourceAppend', { numberOfKeys: 4, lua: appendSource });
}

/**
 * Many script arguments as one JSON array, decoded with cjson in the script: ioredis builds and writes
 * every argument on its own, which for a batch of events cost more than encoding them. JSON.stringify
 * escapes a lone UTF-16 surrogate, which cjson refuses; such strings are made well-formed first
 * (U+FFFD), as ioredis' UTF-8 encoding of a separate argument writes them.
 */
export function packJsonArgument(values: readonly (string | number)[]): string {
  const packed = JSON.stringify(values);
  if (!/\\ud[89a-f]/i.test(packed)) return packed;
  return JSON.stringify(values.map((v) => (typeof v === 'string' ? v.toWellFormed() : v)));
}
