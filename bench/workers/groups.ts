import type { Redis } from 'ioredis';

/** Creates the consumer group on each stream, from its first entry (BUSYGROUP: already there). */
export async function createGroups(redis: Redis, streams: readonly string[], group: string): Promise<void> {
  for (const stream of streams) {
    await redis.xgroup('CREATE', stream, group, '0', 'MKSTREAM').catch((error: unknown) => {
      if (!(error instanceof Error && error.message.includes('BUSYGROUP'))) throw error;
    });
  }
}
