import type { Redis } from 'ioredis';
import { partitionKeys } from '@redsource/processor';

/**
 * Whether a group's partitions are shared out as the processors' rounds leave them: every lease
 * (one per partition of each stream) held, each processor holding its fair share of the units
 * (rebalance.lua's rule), and every stream's partition claimed under its lease's token (so no
 * handover is left to happen). The lease keys share the group's slot; the epochs each stream's.
 */
export async function ownershipSettled(
  redis: Redis,
  group: string,
  consumers: readonly string[],
  streams: readonly string[],
  partitions: number,
): Promise<boolean> {
  const members = (await redis.zrange(partitionKeys.members(group), 0, -1)).sort();
  if (members.length !== consumers.length || members.some((m) => !consumers.includes(m))) return false;
  const units = [...streams].sort().flatMap((stream) => Array.from({ length: partitions }, (_, p) => ({ stream, p })));
  const leases = await redis.mget(units.map((u) => partitionKeys.lease(group, u.stream, u.p)));
  const tokens = new Map<string, string[]>();
  const held = new Map<string, number>();
  for (const [i, lease] of leases.entries()) {
    const match = lease === null ? null : /^(\d+) (.*)$/.exec(lease);
    if (!match) return false;
    const { stream } = units[i] as { stream: string };
    tokens.set(stream, [...(tokens.get(stream) ?? []), match[1] as string]);
    held.set(match[2] as string, (held.get(match[2] as string) ?? 0) + 1);
  }
  const fair = (rank: number) =>
    Math.floor(units.length / members.length) + (rank < units.length % members.length ? 1 : 0);
  if (members.some((m, rank) => held.get(m) !== fair(rank))) return false;
  for (const stream of streams) {
    const expected = tokens.get(stream) ?? [];
    const epochs = await redis.mget(expected.map((_, p) => partitionKeys.epoch(stream, group, p)));
    if (epochs.some((e, p) => e !== expected[p])) return false;
  }
  return true;
}
