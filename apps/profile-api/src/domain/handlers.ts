import type { RecordedEvent } from '@redsource/event-store';
import { HandlerRegistry } from '@redsource/processor';
import type { SnapshotChange } from '@redsource/snapshot-store';
import type { ActivityData, FriendData, PageData, PersonalData, ProfileStreams } from './events.ts';
import { DEFAULT_STREAMS } from './events.ts';

/** Snapshot sets and counters of a profile. */
export const FRIENDS = 'friends';
export const LIKED_PAGES = 'likedPages';

const personal = ({ userId: _userId, ...fields }: PersonalData) => fields;

/**
 * How each event changes a profile snapshot. Each stream writes its own part of the snapshot
 * (updates: personal fields and visibility; activity: liked pages and counters; friends: the friend
 * set), so the streams can be applied independently and in any interleaving, with one result.
 */
export function profileHandlers(streams: ProfileStreams = DEFAULT_STREAMS): HandlerRegistry {
  return new HandlerRegistry()
    .on<PersonalData>(streams.updates, 'register', ({ data }) =>
      change(data.userId, { op: 'replaceFields', fields: personal(data) }, { op: 'create' }),
    )
    .on<PersonalData>(streams.updates, 'update', ({ data }) => change(data.userId, { op: 'setFields', fields: personal(data) }))
    .on<PersonalData>(streams.updates, 'delete', ({ data }) => change(data.userId, { op: 'remove' }))
    .on<PageData>(streams.activity, 'like', ({ data }) =>
      change(data.userId, { op: 'addMember', set: LIKED_PAGES, member: data.object }, { op: 'increment', counter: 'like' }),
    )
    .on<PageData>(streams.activity, 'unlike', ({ data }) =>
      change(data.userId, { op: 'removeMember', set: LIKED_PAGES, member: data.object }, { op: 'increment', counter: 'unlike' }),
    )
    .on<ActivityData>(streams.activity, '*', (event: RecordedEvent<string, ActivityData>) =>
      change(event.data.userId, { op: 'increment', counter: event.type }),
    )
    .on<FriendData>(streams.friends, 'add', ({ data }) => change(data.userId, { op: 'addMember', set: FRIENDS, member: data.friendId }))
    .on<FriendData>(streams.friends, 'remove', ({ data }) => change(data.userId, { op: 'removeMember', set: FRIENDS, member: data.friendId }));
}

function change(snapshotId: string, ...mutations: SnapshotChange['mutations']): SnapshotChange {
  return { snapshotId, mutations };
}
