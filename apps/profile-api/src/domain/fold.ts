import type { z } from 'zod';
import type { RecordedEvent } from '@redsource/event-store';
import type { ProfileStreams } from './events.ts';
import { DEFAULT_STREAMS } from './events.ts';
import type { Profile } from './profile.ts';

/** A profile's whole state, visible or not: what the pure fold computes. */
export interface ProfileState {
  readonly exists: boolean;
  readonly fields: Readonly<Record<string, unknown>>;
  readonly friends: readonly string[];
  readonly likedPages: readonly string[];
  readonly activity: Readonly<Record<string, number>>;
}

export const emptyProfile: ProfileState = { exists: false, fields: {}, friends: [], likedPages: [], activity: {} };

/**
 * The reference semantics of the profile read model, as a pure function with no Redis:
 * `(state, event) => state`. The snapshots in Redis must always equal this fold of the log.
 */
export function foldProfile(
  state: ProfileState,
  event: RecordedEvent,
  streams: ProfileStreams = DEFAULT_STREAMS,
): ProfileState {
  const data = event.data as Record<string, unknown>;
  if (event.stream === streams.updates) {
    const { userId: _userId, ...fields } = data;
    if (event.type === 'register') return { ...state, exists: true, fields };
    if (event.type === 'update') return { ...state, fields: { ...state.fields, ...fields } };
    if (event.type === 'delete') return { ...state, exists: false, fields: {} };
    return state;
  }
  if (event.stream === streams.activity) {
    // Own keys only (a command may be called `toString`); a computed `__proto__` key is an own key too.
    const count = Object.hasOwn(state.activity, event.type) ? (state.activity[event.type] as number) : 0;
    const activity = { ...state.activity, [event.type]: count + 1 };
    const page = String(data['object']);
    if (event.type === 'like') return { ...state, activity, likedPages: withMember(state.likedPages, page) };
    if (event.type === 'unlike') return { ...state, activity, likedPages: state.likedPages.filter((p) => p !== page) };
    return { ...state, activity };
  }
  if (event.stream === streams.friends) {
    const friend = String(data['friendId']);
    if (event.type === 'add') return { ...state, friends: withMember(state.friends, friend) };
    if (event.type === 'remove') return { ...state, friends: state.friends.filter((f) => f !== friend) };
  }
  return state;
}

/** Folds a whole log into a state per user id. */
export function foldLog(
  events: Iterable<RecordedEvent>,
  streams: ProfileStreams = DEFAULT_STREAMS,
): Map<string, ProfileState> {
  const states = new Map<string, ProfileState>();
  for (const event of events) {
    const userId = String((event.data as { userId: unknown }).userId);
    states.set(userId, foldProfile(states.get(userId) ?? emptyProfile, event, streams));
  }
  return states;
}

export function stateToProfile(id: string, state: ProfileState): Profile | undefined {
  if (!state.exists) return undefined;
  return {
    id,
    ...(state.fields as Record<string, z.core.util.JSONType>),
    friends: [...state.friends],
    likedPages: [...state.likedPages],
    activity: { ...state.activity },
  };
}

const withMember = (list: readonly string[], member: string) => (list.includes(member) ? list : [...list, member]);
