import type { Redis } from 'ioredis';
import { globEscape, scanKeys } from '@redsource/event-store';

/**
 * Streams whose names start with one of the prefixes (SCAN … TYPE stream, never KEYS; every master
 * of a Redis Cluster); redsource's own keys excluded.
 */
export async function discoverStreams(redis: Redis, prefixes: readonly string[]): Promise<string[]> {
  const found = new Set<string>();
  for (const prefix of prefixes) {
    for await (const keys of scanKeys(redis, { match: `${globEscape(prefix)}*`, type: 'stream', count: 1_000 })) {
      for (const key of keys) if (!key.startsWith('redsource:')) found.add(key);
    }
  }
  return [...found].sort();
}
