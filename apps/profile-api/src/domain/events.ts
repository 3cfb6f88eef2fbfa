import { z } from 'zod';
import { EventCatalog } from '@redsource/event-store';
import { SNAPSHOT_ID } from '@redsource/snapshot-store';

/** Field names the profile response uses itself: a personal field may not take them. */
export const RESERVED_FIELDS = new Set(['id', 'userId', 'friends', 'likedPages', 'activity']);
const PERSONAL_FIELD = /^[A-Za-z_][A-Za-z0-9_]{0,63}$/;

/**
 * The seed's spellings, mapped to canonical names. Schemas apply this first, so the flat form
 * (`user_id`, `surename`, `page`) and the envelope form (`userId`, `surname`, `object`) decode
 * to the same data, and decoding canonical data again changes nothing.
 */
const ALIASES: Readonly<Record<string, string>> = { user_id: 'userId', surename: 'surname', friend_id: 'friendId', page: 'object' };

function canonical(input: unknown): unknown {
  if (typeof input !== 'object' || input === null || Array.isArray(input)) return input;
  const out: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(input)) {
    const name = ALIASES[key] ?? key;
    if (Object.hasOwn(out, name) && out[name] !== value) {
      out['__conflict'] = `both '${key}' and its synonym '${name}' are given`;
    }
    out[name] = value;
  }
  return out;
}

// Decoding runs once per entry on the processor's hot path: these schemas avoid zod's costlier
// constructs (unions with transforms, intersections, z.json()) for checks that cost the same.
const ID_MESSAGE = 'user_id must be 1-64 characters from A-Z, a-z, 0-9, _ and -';
const userId = z.preprocess(
  (value) => (typeof value === 'number' && Number.isSafeInteger(value) && value >= 0 ? String(value) : value),
  z.string().regex(SNAPSHOT_ID, ID_MESSAGE),
);

/** A value that survives JSON: what a flat entry (strings) or an envelope's `data` (parsed JSON) holds. */
function isJsonValue(value: unknown, depth = 0): boolean {
  if (value === null || typeof value === 'string' || typeof value === 'boolean') return true;
  if (typeof value === 'number') return Number.isFinite(value);
  if (depth > 32 || typeof value !== 'object') return false;
  if (Array.isArray(value)) return value.every((v) => isJsonValue(v, depth + 1));
  return Object.getPrototypeOf(value) === Object.prototype && Object.values(value).every((v) => isJsonValue(v, depth + 1));
}
const jsonValue = z.custom<z.core.util.JSONType>((value) => isJsonValue(value), 'must be a JSON value (string, number, boolean, null, array or object)');

const noConflict = { __conflict: z.never({ error: (issue) => String(issue.input) }).optional() };

const personalFields = (minimum: number, requireName = false) =>
  z
    .object({ userId, ...noConflict })
    .catchall(jsonValue)
    .superRefine((data, ctx) => {
      const names = Object.keys(data).filter((k) => k !== 'userId');
      if (requireName) {
        const name: unknown = data['name'];
        if (typeof name !== 'string') ctx.addIssue({ code: 'custom', path: ['name'], message: 'Invalid input: expected string, received ' + (name === undefined ? 'undefined' : typeof name) });
        else if (name.length === 0) ctx.addIssue({ code: 'custom', path: ['name'], message: 'name must not be empty' });
      }
      for (const name of names) {
        if (!PERSONAL_FIELD.test(name) || RESERVED_FIELDS.has(name)) {
          ctx.addIssue({ code: 'custom', path: [name], message: `'${name}' cannot be a personal field (letters, digits, _; not ${[...RESERVED_FIELDS].join(', ')})` });
        }
      }
      if (names.length < minimum) ctx.addIssue({ code: 'custom', path: [], message: 'an update must change at least one personal field' });
    });

const withAliases = <T extends z.ZodType>(schema: T) => z.preprocess(canonical, schema);

export const registerSchema = withAliases(personalFields(0, true));
export const updateSchema = withAliases(personalFields(1));
export const deleteSchema = withAliases(z.object({ userId, ...noConflict }));
export const pageSchema = withAliases(z.object({ userId, object: z.string().min(1, 'object (or page) must name the page'), ...noConflict }));
export const activitySchema = withAliases(z.object({ userId, object: z.string().optional(), ...noConflict }).catchall(jsonValue));
export const friendSchema = withAliases(
  z.object({ userId, friendId: userId, ...noConflict }).refine((d) => d.friendId !== d.userId, { message: 'a user cannot befriend themselves', path: ['friendId'] }),
);

export type PersonalData = { userId: string; [field: string]: unknown };
export type PageData = z.output<typeof pageSchema>;
export type ActivityData = z.output<typeof activitySchema>;
export type FriendData = z.output<typeof friendSchema>;

/** The three streams of the profile app; their names come from configuration. */
export interface ProfileStreams {
  readonly updates: string;
  readonly activity: string;
  readonly friends: string;
}

export const DEFAULT_STREAMS: ProfileStreams = { updates: 'user_updates', activity: 'user_activity', friends: 'user_friends' };

const subjectOf = (data: unknown) => (data as { userId?: string }).userId;

export function profileCatalog(streams: ProfileStreams = DEFAULT_STREAMS): EventCatalog {
  return new EventCatalog({
    [streams.updates]: { schemas: { register: registerSchema, update: updateSchema, delete: deleteSchema }, subjectOf },
    // Any other reaction or action (comment, kick, dislike, …) counts as activity.
    [streams.activity]: { schemas: { like: pageSchema, unlike: pageSchema, '*': activitySchema }, subjectOf },
    [streams.friends]: { schemas: { add: friendSchema, remove: friendSchema }, subjectOf },
  });
}
