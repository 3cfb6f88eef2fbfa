import type { Redis } from 'ioredis';
import { partitionKeys } from './keys.ts';

/** One partition of one stream, as `status` shows it. */
export interface PartitionStatus {
  readonly partition: number;
  /** The processor holding the partition's lease now; undefined while it is free (no live holder). */
  readonly owner: string | undefined;
  /** The fencing token of that lease; undefined while the partition is free. */
  readonly token: string | undefined;
  /** The last entry id applied in this partition ('0-0': none yet). */
  readonly cursor: string;
  /** Entries routed to this partition and not applied yet (in the partition stream after the cursor). */
  readonly unapplied: number;
  /** Age of the oldest of those (now minus its id's time, which is the source entry's); undefined when none. */
  readonly oldestUnappliedMs: number | undefined;
}

/** A member of the group's ownership set. */
export interface GroupMember {
  readonly name: string;
  /** When its membership runs out unless renewed (ms since epoch, Redis's clock). */
  readonly expiresAt: number;
}

/** Who holds what in a group: read once per status, shared by every stream (leases cover all streams). */
export interface GroupOwnership {
  /** Live members (membership not expired); undefined when the set cannot be read (an ACL without ZRANGE). */
  readonly members: readonly GroupMember[] | undefined;
  /** partition → its lease. */
  readonly leases: ReadonlyMap<number, { readonly token: string; readonly owner: string }>;
}

const ENTRY_ID = /^\d+-\d+$/;
const PAGE = 10_000;

/** The partition count the group routes `stream` with: the stored one once routing started, else `fallback`. */
export async function readPartitionCount(redis: Redis, stream: string, group: string, fallback: number): Promise<number> {
  const stored = Number(await redis.get(partitionKeys.count(stream, group)));
  return Number.isInteger(stored) && stored >= 1 ? stored : fallback;
}

/** The group's live members and the leases of partitions 0..count-1. */
export async function readOwnership(redis: Redis, group: string, count: number, now: number): Promise<GroupOwnership> {
  const [members, leases] = await Promise.all([
    redis.zrange(partitionKeys.members(group), 0, -1, 'WITHSCORES').then(
      (flat) => {
        const out: GroupMember[] = [];
        for (let i = 0; i + 1 < flat.length; i += 2) out.push({ name: String(flat[i]), expiresAt: Number(flat[i + 1]) });
        // Expired members stay in the set until a live processor's next round removes them.
        return out.filter((m) => m.expiresAt > now);
      },
      () => undefined,
    ),
    Promise.all(Array.from({ length: count }, (_, p) => redis.get(partitionKeys.lease(group, p)))),
  ]);
  const held = new Map<number, { token: string; owner: string }>();
  for (const [p, value] of leases.entries()) {
    const match = value === null ? null : /^(\d+) (.*)$/s.exec(value);
    if (match) held.set(p, { token: match[1] as string, owner: match[2] as string });
  }
  return { members, leases: held };
}

/**
 * Every partition of `stream`: its owner (from the group's leases), cursor and what waits in it.
 * The apply script trims a partition stream below its cursor (XTRIM MINID), so what is left is the
 * cursor's own entry, if still there, and the unapplied ones: XLEN minus the entries at or below
 * the cursor (read with one XRANGE of at most 2). Where more than one is left at or below it (a
 * cursor moved without a trim, as a rebuild's switch-over does), the entries after the cursor are
 * counted instead, a page at a time.
 */
export async function readPartitions(
  redis: Redis,
  stream: string,
  group: string,
  count: number,
  cursorKey: (partition: number) => string,
  ownership: GroupOwnership,
  now: number,
): Promise<PartitionStatus[]> {
  return Promise.all(
    Array.from({ length: count }, async (_, partition): Promise<PartitionStatus> => {
      const key = partitionKeys.stream(stream, group, partition);
      const cursor = (await redis.get(cursorKey(partition))) ?? '0-0';
      const after = ENTRY_ID.test(cursor) ? `(${cursor}` : '-';
      const [length, atOrBelow, oldest] = await Promise.all([
        redis.xlen(key),
        ENTRY_ID.test(cursor) ? redis.xrange(key, '-', cursor, 'COUNT', 2) : Promise.resolve([]),
        redis.xrange(key, after, '+', 'COUNT', 1),
      ]);
      const unapplied = atOrBelow.length < 2 ? Math.max(0, length - atOrBelow.length) : await countFrom(redis, key, after);
      const lease = ownership.leases.get(partition);
      const first = oldest[0]?.[0];
      return {
        partition,
        owner: lease?.owner,
        token: lease?.token,
        cursor,
        unapplied: first === undefined ? 0 : Math.max(unapplied, 1),
        oldestUnappliedMs: first === undefined ? undefined : Math.max(0, now - idTime(first)),
      };
    }),
  );
}

/** Entries of `key` from `start` (an XRANGE start: `(<id>` or `-`) to its end, counted a page at a time. */
export async function countFrom(redis: Redis, key: string, start: string): Promise<number> {
  let count = 0;
  let from = start;
  for (;;) {
    const page = await redis.xrange(key, from, '+', 'COUNT', PAGE);
    count += page.length;
    if (page.length < PAGE) return count;
    from = `(${page[page.length - 1]?.[0] ?? ''}`;
  }
}

/** The time part of an entry id (ms since epoch). */
export function idTime(id: string): number {
  return Number(id.slice(0, id.indexOf('-')));
}
