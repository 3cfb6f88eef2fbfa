import { compareEntryIds } from './entry-ids.ts';

/** A snapshot as stored in its hash, decoded. */
export interface Snapshot<Fields = Record<string, unknown>> {
  readonly id: string;
  /** False after a `remove` (or before any `create`): the snapshot exists but is not visible. */
  readonly exists: boolean;
  /** How many changes have been applied to it: grows on every change, usable as an ETag. */
  readonly revision: number;
  readonly fields: Fields;
  /** Ordered sets: members in the order they were added. */
  readonly sets: Readonly<Record<string, readonly string[]>>;
  readonly counters: Readonly<Record<string, number>>;
}

/**
 * Which content of a snapshot is stored: `_inc`, set when its hash is created (each new hash, a rebuild's
 * shadow included, gets another), and `_rev`. Equal versions mean equal content; an `incarnation` that is
 * undefined (a hash written before incarnations existed) matches nothing.
 */
export interface SnapshotVersion {
  readonly incarnation: string | undefined;
  readonly revision: string;
}

/**
 * Hash layout: `_exists`, `_rev`, `_inc` (see SnapshotVersion), `f:<field>` = JSON value, `s:<set>:<member>` = `<entry id>/<op
 * index>` of the op that added it (orders the set), `c:<counter>` = integer. One hash per snapshot, so every write of
 * one snapshot touches one key (one cluster slot).
 */
export function decodeHash(id: string, hash: Record<string, string>): Snapshot {
  // Null-prototype objects: a field, set or counter may be called `__proto__` or `constructor`.
  const fields = Object.create(null) as Record<string, unknown>;
  const members = new Map<string, SetMember[]>();
  const counters = Object.create(null) as Record<string, number>;
  let exists = false;
  let revision = 0;
  for (const name in hash) {
    const value = hash[name] as string;
    if (name === '_exists') exists = true;
    else if (name === '_rev') revision = Number(value);
    else if (name.startsWith('f:')) fields[name.slice(2)] = JSON.parse(value);
    else if (name.startsWith('c:')) counters[name.slice(2)] = Number(value);
    else if (name.startsWith('s:')) {
      const split = name.indexOf(':', 2);
      const set = name.slice(2, split);
      let list = members.get(set);
      if (!list) members.set(set, (list = []));
      list.push(setMember(name.slice(split + 1), value));
    }
  }
  const sets = Object.create(null) as Record<string, string[]>;
  for (const [set, list] of members) {
    list.sort(bySetOrder);
    sets[set] = list.map((m) => m.member);
  }
  return { id, exists, revision, fields, sets, counters };
}

/** A set member with the `<entry id>/<op index>` that added it, split once (not on every comparison). */
interface SetMember {
  readonly member: string;
  readonly entryId: string;
  readonly index: number;
}

function setMember(member: string, addedBy: string): SetMember {
  const slash = addedBy.indexOf('/');
  return slash < 0
    ? { member, entryId: addedBy, index: 0 }
    : { member, entryId: addedBy.slice(0, slash), index: Number(addedBy.slice(slash + 1)) };
}

function bySetOrder(a: SetMember, b: SetMember): number {
  return compareEntryIds(a.entryId, b.entryId) || a.index - b.index || (a.member < b.member ? -1 : 1);
}
