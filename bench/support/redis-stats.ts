import type { Redis } from 'ioredis';

/** CPU seconds the redis-server has used (user + sys, main thread and all). */
export async function redisCpuSeconds(redis: Redis): Promise<number> {
  const info = await redis.info('cpu');
  const read = (name: string) => Number(new RegExp(`${name}:([\\d.]+)`).exec(info)?.[1] ?? 0);
  return read('used_cpu_user') + read('used_cpu_sys');
}

/** calls and total µs per command since the last CONFIG RESETSTAT, from INFO commandstats. */
export async function commandStats(redis: Redis): Promise<Map<string, { calls: number; usec: number }>> {
  const info = await redis.info('commandstats');
  const stats = new Map<string, { calls: number; usec: number }>();
  for (const match of info.matchAll(/^cmdstat_([^:]+):calls=(\d+),usec=(\d+)/gm)) {
    stats.set(match[1] as string, { calls: Number(match[2]), usec: Number(match[3]) });
  }
  return stats;
}

/** Redis CPU use over a measured span: share of one core, and where the time went. */
export class RedisLoad {
  private cpuAtStart = 0;
  private startedAt = 0;

  constructor(private readonly redis: Redis) {}

  async start(): Promise<void> {
    await this.redis.config('RESETSTAT');
    this.cpuAtStart = await redisCpuSeconds(this.redis);
    this.startedAt = performance.now();
  }

  /** e.g. `redis-server 97% of a core; evalsha 81% (612 calls, 1.2 ms each), xreadgroup 3%`. */
  async describe(top = 5): Promise<string> {
    const wall = (performance.now() - this.startedAt) / 1000;
    const cpu = (await redisCpuSeconds(this.redis)) - this.cpuAtStart;
    const stats = [...(await commandStats(this.redis))]
      .filter(([name]) => !['info', 'config'].includes(name))
      .sort((a, b) => b[1].usec - a[1].usec)
      .slice(0, top);
    const parts = stats.map(
      ([name, s]) =>
        `${name} ${((s.usec / 1e6 / wall) * 100).toFixed(0)}% (${s.calls} calls, ${(s.usec / s.calls / 1000).toFixed(2)} ms each)`,
    );
    return `redis-server busy ${((cpu / wall) * 100).toFixed(0)}% of a core; in commands: ${parts.join(', ')}`;
  }
}
