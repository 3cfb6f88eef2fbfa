import type { Redis } from 'ioredis';

/** Streams whose names start with one of the prefixes (SCAN … TYPE stream, never KEYS); redsource's own keys excluded. */
export async function discoverStreams(redis: Redis, prefixes: readonly string[]): Promise<string[]> {
  const found = new Set<string>();
  for (const prefix of prefixes) {
    const pattern = `${prefix.replace(/[*?[\]\\]/g, '\\$&')}*`;
    let cursor = '0';
    do {
      const [next, keys] = (await redis.call('SCAN', cursor, 'MATCH', pattern, 'COUNT', 1_000, 'TYPE', 'stream')) as [string, string[]];
      for (const key of keys) if (!key.startsWith('redsource:')) found.add(key);
      cursor = next;
    } while (cursor !== '0');
  }
  return [...found].sort();
}
