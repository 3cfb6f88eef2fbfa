import type { Redis } from 'ioredis';
import { compareEntryIds } from '@redsource/snapshot-store';
import { partitionKeys } from './keys.ts';
import type { PartitionFinder } from './subject.ts';

/** One partition of one stream, as `status` shows it. */
export interface PartitionStatus {
  readonly partition: number;
  /** The processor holding the partition's lease now; undefined while it is free (no live holder). */
  readonly owner: string | undefined;
  /** The fencing token of that lease; undefined while the partition is free. */
  readonly token: string | undefined;
  /**
   * How far the partition is applied: every entry of it with an id up to this one is ('0-0': none
   * yet). The id of the last entry its holder read, which may be another partition's entry.
   */
  readonly cursor: string;
  /** Entries of this partition in the stream after its cursor: not applied yet (a lower bound unless `unappliedExact`). */
  readonly unapplied: number;
  /** False when the stream was counted only part of the way (see `StatusOptions.scanLimit`): `unapplied` is at least that. */
  readonly unappliedExact: boolean;
  /** Age of the oldest of those (now minus its id's time); undefined when none was found. */
  readonly oldestUnappliedMs: number | undefined;
}

/** A member of the group's ownership set. */
export interface GroupMember {
  readonly name: string;
  /** When its membership runs out unless renewed (ms since epoch, Redis's clock). */
  readonly expiresAt: number;
}

/** Who holds what in a group: read once per status. */
export interface GroupOwnership {
  /** Live members (membership not expired); undefined when the set cannot be read (an ACL without ZRANGE). */
  readonly members: readonly GroupMember[] | undefined;
  /** stream → partition → its lease. */
  readonly leases: ReadonlyMap<string, ReadonlyMap<number, { readonly token: string; readonly owner: string }>>;
}

const ENTRY_ID = /^\d+-\d+$/;
/** Entries per XRANGE of the scan. */
const PAGE = 5_000;

/** The partition count the group processes `stream` with: the stored one once a processor prepared it, else `fallback`. */
export async function readPartitionCount(
  redis: Redis,
  stream: string,
  group: string,
  fallback: number,
): Promise<number> {
  const stored = Number(await redis.get(partitionKeys.count(stream, group)));
  return Number.isInteger(stored) && stored >= 1 ? stored : fallback;
}

/** The group's live members and the leases of each stream's partitions 0..counts[i]-1. */
export async function readOwnership(
  redis: Redis,
  group: string,
  streams: readonly string[],
  counts: readonly number[],
  now: number,
): Promise<GroupOwnership> {
  const units = streams.flatMap((stream, i) => Array.from({ length: counts[i] ?? 0 }, (_, p) => ({ stream, p })));
  const [members, leases] = await Promise.all([
    redis.zrange(partitionKeys.members(group), 0, -1, 'WITHSCORES').then(
      (flat) => {
        const out: GroupMember[] = [];
        for (let i = 0; i + 1 < flat.length; i += 2)
          out.push({ name: String(flat[i]), expiresAt: Number(flat[i + 1]) });
        // Expired members stay in the set until a live processor's next round removes them.
        return out.filter((m) => m.expiresAt > now);
      },
      () => undefined,
    ),
    Promise.all(units.map((u) => redis.get(partitionKeys.lease(group, u.stream, u.p)))),
  ]);
  const held = new Map<string, Map<number, { token: string; owner: string }>>();
  for (const [i, value] of leases.entries()) {
    const match = value === null ? null : /^(\d+) (.*)$/s.exec(value);
    const { stream, p } = units[i] as { stream: string; p: number };
    let ofStream = held.get(stream);
    if (!ofStream) held.set(stream, (ofStream = new Map<number, { token: string; owner: string }>()));
    if (match) ofStream.set(p, { token: match[1] as string, owner: match[2] as string });
  }
  return { members, leases: held };
}

/** What waits in a stream after its partitions' cursors, counted by `countUnapplied`. */
export interface Unapplied {
  /** Entries after the lowest partition cursor: not yet applied by every partition. */
  readonly lag: number;
  /** Per partition: its entries after its own cursor, and the id of the first of them. */
  readonly partitions: readonly { readonly unapplied: number; readonly oldest: string | undefined }[];
  /** False when the scan stopped at its limit with more entries after: every count is a lower bound. */
  readonly exact: boolean;
}

/**
 * Nothing is copied per partition: what waits in partition p is its entries in the source stream
 * after p's cursor. One scan of the stream from the lowest cursor, a page at a time, finds each
 * entry's partition (as the processors do) and counts it where it is past that partition's cursor.
 * At most `limit` entries are read, so a huge backlog costs a bounded scan (the counts are then
 * lower bounds).
 */
export async function countUnapplied(
  redis: Redis,
  stream: string,
  cursors: readonly string[],
  finder: PartitionFinder,
  limit: number,
): Promise<Unapplied> {
  const partitions = cursors.map(() => ({ unapplied: 0, oldest: undefined as string | undefined }));
  const lowest = cursors.reduce((min, c) => (compareEntryIds(c, min) < 0 ? c : min), cursors[0] ?? '0-0');
  let lag = 0;
  let from = `(${lowest}`;
  for (;;) {
    // One entry past the limit tells whether more follow; it is not counted.
    const want = Math.min(PAGE, limit + 1 - lag);
    const page = await redis.xrange(stream, from, '+', 'COUNT', want);
    for (const [id, fields] of page) {
      if (lag === limit) return { lag, partitions, exact: false };
      lag += 1;
      const index = finder.entry(stream, fields);
      const partition = partitions[index];
      if (!partition || compareEntryIds(id, cursors[index] ?? '0-0') <= 0) continue;
      partition.unapplied += 1;
      partition.oldest ??= id;
    }
    if (page.length < want) return { lag, partitions, exact: true };
    from = `(${page[page.length - 1]?.[0] ?? ''}`;
  }
}

/** A stored cursor, or '0-0' where there is none (or it is not an entry id). */
export function cursorOrStart(value: string | null | undefined): string {
  return value !== null && value !== undefined && ENTRY_ID.test(value) ? value : '0-0';
}

/** The time part of an entry id (ms since epoch). */
export function idTime(id: string): number {
  return Number(id.slice(0, id.indexOf('-')));
}
