import type { Redis } from 'ioredis';
import { RedisEventStore } from '@redsource/event-store';
import { StreamProcessor, type ProcessorSettingsInput } from '@redsource/processor';
import { SnapshotStore } from '@redsource/snapshot-store';
import { profileCatalog, type ProfileStreams } from '../../apps/profile-api/src/domain/events.ts';
import { profileHandlers } from '../../apps/profile-api/src/domain/handlers.ts';
import { unique } from './redis.ts';

/** The profile app's pieces on stream and key names no other test uses. */
export function isolatedProfileSetup(redis: Redis) {
  const streams: ProfileStreams = {
    updates: unique('user_updates'),
    activity: unique('user_activity'),
    friends: unique('user_friends'),
  };
  const keyPrefix = `${unique('user_snapshot')}_`;
  const eventStore = new RedisEventStore({ redis, catalog: profileCatalog(streams) });
  const snapshots = new SnapshotStore({ redis, keyPrefix, projection: 'profiles' });
  const handlers = profileHandlers(streams);
  const group = unique('group');
  const processor = (client: Redis, settings: ProcessorSettingsInput = {}) =>
    new StreamProcessor({
      redis: client,
      eventStore: new RedisEventStore({ redis: client, catalog: profileCatalog(streams) }),
      snapshots: new SnapshotStore({ redis: client, keyPrefix, projection: 'profiles' }),
      handlers,
      group,
      blockMs: 100,
      ...settings,
    });
  return { streams, keyPrefix, eventStore, snapshots, handlers, group, processor };
}
