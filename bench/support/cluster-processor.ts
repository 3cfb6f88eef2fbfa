/**
 * Child process of the Redis Cluster processing runs (bench/cluster-processing.ts): one redsource
 * processor with the profile handlers, as `redsource process` runs it (app defaults: 12 partitions,
 * batch 500, rebalance every 1 s...), connected the way the app connects: REDIS_URL is the list of
 * the cluster's nodes, `openRedisConnection` asks the server whether it is a cluster and returns the
 * ioredis Cluster client (the app's cluster options), passed on typed as `Redis` as the app does.
 * The settings given on the command line are applied over the defaults.
 *
 * Posts the mode the server reported (the parent refuses anything but `cluster`), then `ready`;
 * starts its processor on `go` (then posts `started`); on `stop` stops it gracefully and posts its
 * peak RSS and counters. The parent measures its CPU from /proc.
 *
 * argv: redisSeeds streamsJson keyPrefix projection group consumer settingsJson
 */
import type { Redis } from 'ioredis';
import { RedisEventStore } from '@redsource/event-store';
import { StreamProcessor, type ProcessorSettingsInput } from '@redsource/processor';
import { SnapshotStore } from '@redsource/snapshot-store';
import { profileCatalog, type ProfileStreams } from '../../apps/profile-api/src/domain/events.ts';
import { profileHandlers } from '../../apps/profile-api/src/domain/handlers.ts';
import { openRedisConnection } from '../../apps/profile-api/src/runtime/redis-connection.ts';
import { arg, nextMessage, peakRssMiB, post, runWorker } from './worker-side.ts';

runWorker(async () => {
  const streams = JSON.parse(arg(1, 'streams')) as ProfileStreams;
  const consumer = arg(5, 'consumer');
  const settings = JSON.parse(arg(6, 'settings')) as ProcessorSettingsInput;
  const connection = await openRedisConnection(arg(0, 'redisSeeds'), `bench:${consumer}`);
  // As open-redis.ts: the Cluster client goes where a Redis is expected.
  const redis = connection.client as unknown as Redis;
  const eventStore = new RedisEventStore({ redis, catalog: profileCatalog(streams), source: 'redsource/profile-api' });
  const snapshots = new SnapshotStore({ redis, keyPrefix: arg(2, 'keyPrefix'), projection: arg(3, 'projection') });
  const processor = new StreamProcessor({
    redis,
    eventStore,
    snapshots,
    handlers: profileHandlers(streams),
    ...settings,
    group: arg(4, 'group'),
    consumer,
    start: 'beginning',
  });
  await redis.ping();
  post({ type: 'mode', mode: connection.mode });
  post({ type: 'ready' });
  await nextMessage('go');
  await processor.start();
  post({ type: 'started' });
  await nextMessage('stop');
  await processor.stop();
  post({ type: 'stopped', peakRssMiB: peakRssMiB(), stats: processor.stats() });
  redis.disconnect();
});
