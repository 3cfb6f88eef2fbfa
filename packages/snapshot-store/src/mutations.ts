import { InvalidMutationError } from './errors.ts';

/**
 * What an event does to a snapshot, as data. Handlers return these; the apply script carries them
 * out inside Redis, so a batch costs one round trip whatever it contains.
 */
export type Mutation =
  /** The snapshot becomes visible (a registration). */
  | { readonly op: 'create' }
  /** The snapshot is hidden and its fields cleared; sets and counters stay (see the README). */
  | { readonly op: 'remove' }
  /** All fields are replaced by these. */
  | { readonly op: 'replaceFields'; readonly fields: Readonly<Record<string, unknown>> }
  | { readonly op: 'setFields'; readonly fields: Readonly<Record<string, unknown>> }
  | { readonly op: 'unsetFields'; readonly names: readonly string[] }
  /** Adds a member to an ordered set (kept in the order members were first added); no-op if present. */
  | { readonly op: 'addMember'; readonly set: string; readonly member: string }
  | { readonly op: 'removeMember'; readonly set: string; readonly member: string }
  | { readonly op: 'increment'; readonly counter: string; readonly by?: number };

/** The mutations one entry makes to one snapshot. */
export interface SnapshotChange {
  readonly snapshotId: string;
  readonly mutations: readonly Mutation[];
}

/** Names of fields, sets and counters: they become hash field names, so they are kept plain. */
const NAME = /^[A-Za-z_][A-Za-z0-9_]{0,63}$/;

function checkName(kind: string, name: string): string {
  if (!NAME.test(name)) throw new InvalidMutationError(`${kind} name '${name}' must match ${NAME.source}`);
  return name;
}

/** A set member is a string: anything else (undefined from an optional field, a number) would fail the script. */
function checkMember(set: string, member: unknown): string {
  if (typeof member !== 'string')
    throw new InvalidMutationError(
      `member of set '${set}' must be a string, not ${member === null ? 'null' : typeof member}`,
    );
  return member;
}

/** Appends the script's encoding of mutations (see apply-batch.lua) to `out`; returns the op count. */
export function encodeMutations(mutations: readonly Mutation[], out: (string | number)[]): number {
  let ops = 0;
  for (const m of mutations) {
    switch (m.op) {
      case 'create':
        out.push('X');
        ops++;
        break;
      case 'remove':
        out.push('R');
        ops++;
        break;
      case 'replaceFields':
        out.push('C');
        ops++;
        ops += encodeFields(m.fields, out);
        break;
      case 'setFields':
        ops += encodeFields(m.fields, out);
        break;
      case 'unsetFields':
        for (const name of m.names) out.push('U', checkName('field', name));
        ops += m.names.length;
        break;
      case 'addMember':
        out.push('A', checkName('set', m.set), checkMember(m.set, m.member));
        ops++;
        break;
      case 'removeMember':
        out.push('M', checkName('set', m.set), checkMember(m.set, m.member));
        ops++;
        break;
      case 'increment': {
        const by = m.by ?? 1;
        if (!Number.isSafeInteger(by))
          throw new InvalidMutationError(`increment of '${m.counter}' by ${by}: must be an integer`);
        out.push('I', checkName('counter', m.counter), by);
        ops++;
        break;
      }
      default:
        throw new InvalidMutationError(`unknown mutation ${JSON.stringify(m satisfies never)}`);
    }
  }
  return ops;
}

function encodeFields(fields: Readonly<Record<string, unknown>>, out: (string | number)[]): number {
  let ops = 0;
  for (const [name, value] of Object.entries(fields)) {
    if (value === undefined) continue;
    const json = JSON.stringify(value) as string | undefined;
    // A function or a symbol has no JSON: caught by the caller, which dead-letters that entry alone.
    if (json === undefined) throw new TypeError(`field '${name}' holds a ${typeof value}, which JSON cannot hold`);
    out.push('F', checkName('field', name), json);
    ops++;
  }
  return ops;
}

/** Checks mutations the way encodeMutations would (names, integers) without encoding them; throws InvalidMutationError. */
export function checkMutations(mutations: readonly Mutation[]): void {
  for (const m of mutations) {
    switch (m.op) {
      case 'create':
      case 'remove':
        break;
      case 'replaceFields':
      case 'setFields':
        for (const name of Object.keys(m.fields)) checkName('field', name);
        break;
      case 'unsetFields':
        for (const name of m.names) checkName('field', name);
        break;
      case 'addMember':
      case 'removeMember':
        checkName('set', m.set);
        checkMember(m.set, m.member);
        break;
      case 'increment':
        checkName('counter', m.counter);
        if (m.by !== undefined && !Number.isSafeInteger(m.by))
          throw new InvalidMutationError(`increment of '${m.counter}' by ${m.by}: must be an integer`);
        break;
      default:
        throw new InvalidMutationError(`unknown mutation ${JSON.stringify(m satisfies never)}`);
    }
  }
}
