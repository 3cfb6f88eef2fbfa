import { z } from 'zod';
import { EventCatalog } from '@redsource/event-store';
import { SNAPSHOT_ID } from '@redsource/snapshot-store';

/** Field names the profile response uses itself: a personal field may not take them. */
export const RESERVED_FIELDS = new Set(['id', 'userId', 'friends', 'likedPages', 'activity']);
const PERSONAL_FIELD = /^[A-Za-z_][A-Za-z0-9_]{0,63}$/;

/**
 * The seed's spellings, mapped to canonical names. Schemas apply this first, so the flat form
 * (`user_id`, `surename`, `page`) and the envelope form (`userId`, `surname`, `object`) decode
 * to the same data, and decoding canonical data again changes nothing. A Map: an input name is
 * never looked up on a prototype.
 */
const ALIASES: ReadonlyMap<string, string> = new Map([
  ['user_id', 'userId'],
  ['surename', 'surname'],
  ['friend_id', 'friendId'],
  ['page', 'object'],
]);

type Fields = Record<string, unknown>;
const isRecord = (value: unknown): value is Fields =>
  typeof value === 'object' && value !== null && !Array.isArray(value);
const canonicalName = (key: string) => ALIASES.get(key) ?? key;

/**
 * The data under canonical names, in a null-prototype object: names are just names, so
 * `__proto__` or `constructor` become own keys, never the prototype or an inherited member.
 */
function canonical(input: Fields, ctx: z.RefinementCtx): Fields {
  const out = Object.create(null) as Fields;
  for (const key of Object.keys(input)) {
    const name = canonicalName(key);
    const value = input[key];
    if (Object.hasOwn(out, name) && out[name] !== value) {
      const first = Object.keys(input).find((k) => k !== key && canonicalName(k) === name) ?? name;
      ctx.addIssue({
        code: 'custom',
        path: [name],
        message: `both '${first}' and its synonym '${key}' are given, with different values`,
      });
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
  return (
    Object.getPrototypeOf(value) === Object.prototype && Object.values(value).every((v) => isJsonValue(v, depth + 1))
  );
}
const JSON_MESSAGE = 'must be a JSON value (string, number, boolean, null, array or object)';

interface EventDataOptions {
  /** Keep the fields the shape does not declare (each must be a JSON value); by default they are left out. */
  readonly others?: boolean;
  readonly check?: (data: Fields, ctx: z.RefinementCtx) => void;
}

/**
 * An event's data: the declared fields checked by a zod object, the others (when kept) as they
 * are. Written out rather than with zod's catchall, which leaves an undeclared `__proto__` out.
 */
function eventData<Data>(shape: z.ZodRawShape, options: EventDataOptions = {}): z.ZodType<Data> {
  const declared = z.object(shape);
  return z.unknown().transform((input, ctx) => {
    if (!isRecord(input)) {
      ctx.addIssue({
        code: 'custom',
        message: `Invalid input: expected object, received ${Array.isArray(input) ? 'array' : input === null ? 'null' : typeof input}`,
      });
      return z.NEVER;
    }
    const data = canonical(input, ctx);
    const out = Object.create(null) as Fields;
    const parsed = declared.safeParse(data);
    if (parsed.success) for (const key of Object.keys(parsed.data)) out[key] = parsed.data[key];
    else
      for (const issue of parsed.error.issues)
        ctx.addIssue({ code: 'custom', path: issue.path, message: issue.message });
    if (options.others) {
      for (const key of Object.keys(data)) {
        if (Object.hasOwn(shape, key)) continue;
        if (isJsonValue(data[key])) out[key] = data[key];
        else ctx.addIssue({ code: 'custom', path: [key], message: JSON_MESSAGE });
      }
    }
    options.check?.(out, ctx);
    return out as Data;
  });
}

const personalFields = (minimum: number, requireName = false) =>
  eventData<PersonalData>(
    { userId },
    {
      others: true,
      check: (data, ctx) => {
        const names = Object.keys(data).filter((k) => k !== 'userId');
        if (requireName) {
          const name: unknown = data['name'];
          if (typeof name !== 'string')
            ctx.addIssue({
              code: 'custom',
              path: ['name'],
              message: 'Invalid input: expected string, received ' + (name === undefined ? 'undefined' : typeof name),
            });
          else if (name.length === 0)
            ctx.addIssue({ code: 'custom', path: ['name'], message: 'name must not be empty' });
        }
        for (const name of names) {
          if (!PERSONAL_FIELD.test(name) || RESERVED_FIELDS.has(name)) {
            ctx.addIssue({
              code: 'custom',
              path: [name],
              message: `'${name}' cannot be a personal field (letters, digits, _; not ${[...RESERVED_FIELDS].join(', ')})`,
            });
          }
        }
        if (names.length < minimum)
          ctx.addIssue({ code: 'custom', path: [], message: 'an update must change at least one personal field' });
      },
    },
  );

export const registerSchema = personalFields(0, true);
export const updateSchema = personalFields(1);
export const deleteSchema = eventData<{ userId: string }>({ userId });
export const pageSchema = eventData<PageData>({
  userId,
  object: z.string().min(1, 'object (or page) must name the page'),
});
export const activitySchema = eventData<ActivityData>({ userId, object: z.string().optional() }, { others: true });
export const friendSchema = eventData<FriendData>(
  { userId, friendId: userId },
  {
    check: (data, ctx) => {
      if (data['friendId'] !== undefined && data['friendId'] === data['userId'])
        ctx.addIssue({ code: 'custom', path: ['friendId'], message: 'a user cannot befriend themselves' });
    },
  },
);

/** Event data in null-prototype objects: a field may be called `__proto__` or `constructor`. */
export type PersonalData = { userId: string; [field: string]: unknown };
export type PageData = { userId: string; object: string };
export type ActivityData = { userId: string; object?: string; [field: string]: unknown };
export type FriendData = { userId: string; friendId: string };

// A type alias, not an interface: it has an implicit index signature, so `Object.values(streams)` is `string[]`.
/** The three streams of the profile app; their names come from configuration. */
export type ProfileStreams = {
  readonly updates: string;
  readonly activity: string;
  readonly friends: string;
};

export const DEFAULT_STREAMS: ProfileStreams = {
  updates: 'user_updates',
  activity: 'user_activity',
  friends: 'user_friends',
};

const subjectOf = (data: unknown) => (data as { userId?: string }).userId;
/** The raw entry's user id, in both spellings: a user's events share a partition, so they apply in order. */
const subjectFields = ['user_id', 'userId'];

/** An activity command is counted under its own name: one a snapshot counter can have. */
const ACTIVITY_COMMAND = {
  pattern: /^[A-Za-z_][A-Za-z0-9_]{0,63}$/,
  message: 'an activity command must be 1-64 of A-Z, a-z, 0-9 and _, not starting with a digit (it names a counter)',
};

/**
 * The profile app's streams and their events. Keyed by what the streams are in code (`updates`,
 * `activity`, `friends`), each with its name in Redis from configuration: the projection's handlers
 * are typed from these schemas.
 */
export function profileCatalog(streams: ProfileStreams = DEFAULT_STREAMS) {
  return new EventCatalog({
    updates: {
      stream: streams.updates,
      schemas: { register: registerSchema, update: updateSchema, delete: deleteSchema },
      subjectOf,
      subjectFields,
    },
    // Any other reaction or action (comment, kick, dislike, …) counts as activity.
    // Each activity command is counted under its name (`c:<command>`), which must be a counter name.
    activity: {
      stream: streams.activity,
      schemas: { like: pageSchema, unlike: pageSchema, '*': activitySchema },
      subjectOf,
      subjectFields,
      otherTypes: ACTIVITY_COMMAND,
    },
    friends: {
      stream: streams.friends,
      schemas: { add: friendSchema, remove: friendSchema },
      subjectOf,
      subjectFields,
    },
  });
}

export type ProfileCatalog = ReturnType<typeof profileCatalog>;
