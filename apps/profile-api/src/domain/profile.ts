import { z } from 'zod';
import type { Snapshot } from '@redsource/snapshot-store';
import { FRIENDS, LIKED_PAGES } from './handlers.ts';

/** The profile as GET /users/:id/profile serves it. */
export const profileSchema = z
  .object({
    id: z.string(),
    name: z.string().optional(),
    surname: z.string().optional(),
    friends: z.array(z.string()),
    likedPages: z.array(z.string()),
    activity: z.record(z.string(), z.number().int()),
  })
  .catchall(z.json())
  // What the document shows (else a generated one, with counts of -9007199254740991): the quick start's user 1.
  .meta({
    examples: [
      { id: '1', name: 'Duffy', surname: 'Duck', friends: [], likedPages: [], activity: { kick: 1, dislike: 1 } },
    ],
  });

export type Profile = z.output<typeof profileSchema>;

/** A visible snapshot as a profile; `undefined` for none or a deleted one. */
export function toProfile(snapshot: Snapshot | undefined): Profile | undefined {
  if (!snapshot?.exists) return undefined;
  return {
    id: snapshot.id,
    ...(snapshot.fields as Record<string, z.core.util.JSONType>),
    friends: [...(snapshot.sets[FRIENDS] ?? [])],
    likedPages: [...(snapshot.sets[LIKED_PAGES] ?? [])],
    activity: { ...snapshot.counters },
  };
}
