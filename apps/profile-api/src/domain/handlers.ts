import { defineProjection, type HandlerRegistry } from '@redsource/processor';
import type { SnapshotChange } from '@redsource/snapshot-store';
import {
  DEFAULT_STREAMS,
  profileCatalog,
  type PersonalData,
  type ProfileCatalog,
  type ProfileStreams,
} from './events.ts';

/** Snapshot sets and counters of a profile. */
export const FRIENDS = 'friends';
export const LIKED_PAGES = 'likedPages';
/** The snapshot key prefix when none is configured (SNAPSHOT_PREFIX). */
export const DEFAULT_SNAPSHOT_PREFIX = 'user_snapshot_';

const personal = ({ userId: _userId, ...fields }: PersonalData) => fields;

/**
 * How each event changes a profile snapshot. Each stream writes its own part of the snapshot
 * (updates: personal fields and visibility; activity: liked pages and counters; friends: the friend
 * set), so the streams can be applied independently and in any interleaving, with one result.
 * Every handler's data is typed by the catalog's schema for its stream and type.
 */
export function profileProjection(catalog: ProfileCatalog = profileCatalog(), keyPrefix = DEFAULT_SNAPSHOT_PREFIX) {
  return defineProjection({
    name: 'profiles',
    catalog,
    keyPrefix,
    handlers: {
      updates: {
        register: ({ data }) => change(data.userId, { op: 'replaceFields', fields: personal(data) }, { op: 'create' }),
        update: ({ data }) => change(data.userId, { op: 'setFields', fields: personal(data) }),
        delete: ({ data }) => change(data.userId, { op: 'remove' }),
      },
      activity: {
        like: ({ data }) =>
          change(
            data.userId,
            { op: 'addMember', set: LIKED_PAGES, member: data.object },
            { op: 'increment', counter: 'like' },
          ),
        unlike: ({ data }) =>
          change(
            data.userId,
            { op: 'removeMember', set: LIKED_PAGES, member: data.object },
            { op: 'increment', counter: 'unlike' },
          ),
        '*': ({ type, data }) => change(data.userId, { op: 'increment', counter: type }),
      },
      friends: {
        add: ({ data }) => change(data.userId, { op: 'addMember', set: FRIENDS, member: data.friendId }),
        remove: ({ data }) => change(data.userId, { op: 'removeMember', set: FRIENDS, member: data.friendId }),
      },
    },
  });
}

export type ProfileProjection = ReturnType<typeof profileProjection>;

/** The profile projection's handlers, registered under the streams' names (for `replay`, tests and benchmarks). */
export function profileHandlers(streams: ProfileStreams = DEFAULT_STREAMS): HandlerRegistry {
  return profileProjection(profileCatalog(streams)).handlers;
}

function change(snapshotId: string, ...mutations: SnapshotChange['mutations']): SnapshotChange {
  return { snapshotId, mutations };
}
