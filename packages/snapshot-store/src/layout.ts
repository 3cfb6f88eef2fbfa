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
 * Hash layout: `_exists`, `_rev`, `f:<field>` = JSON value, `s:<set>:<member>` = `<entry id>/<op
 * index>` of the op that added it (orders the set), `c:<counter>` = integer. One hash per snapshot, so every write of
 * one snapshot touches one key (one cluster slot).
 */
export function decodeHash(id: string, hash: Record<string, string>): Snapshot {
  const fields: Record<string, unknown> = {};
  const members: Record<string, { member: string; addedBy: string }[]> = {};
  const counters: Record<string, number> = {};
  let exists = false;
  let revision = 0;
  for (const [name, value] of Object.entries(hash)) {
    if (name === '_exists') exists = true;
    else if (name === '_rev') revision = Number(value);
    else if (name.startsWith('f:')) fields[name.slice(2)] = JSON.parse(value);
    else if (name.startsWith('c:')) counters[name.slice(2)] = Number(value);
    else if (name.startsWith('s:')) {
      const split = name.indexOf(':', 2);
      const set = name.slice(2, split);
      (members[set] ??= []).push({ member: name.slice(split + 1), addedBy: value });
    }
  }
  const sets: Record<string, string[]> = {};
  for (const [set, list] of Object.entries(members)) {
    sets[set] = list.sort((a, b) => compareAddedBy(a.addedBy, b.addedBy) || (a.member < b.member ? -1 : 1)).map((m) => m.member);
  }
  return { id, exists, revision, fields, sets, counters };
}

/** Orders `<entry id>/<op index>` values: by entry, then by the op's place in it. */
function compareAddedBy(a: string, b: string): number {
  const [aEntry = '', aIndex = '0'] = a.split('/');
  const [bEntry = '', bIndex = '0'] = b.split('/');
  return compareEntryIds(aEntry, bEntry) || Number(aIndex) - Number(bIndex);
}
