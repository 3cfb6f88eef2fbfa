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
