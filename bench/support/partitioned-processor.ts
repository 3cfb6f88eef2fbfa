/**
 * Child process of the partitioned processing runs (bench/processing.ts, on one Redis;
 * bench/cluster-processing.ts, on a Redis Cluster): one redsource processor, the profile handlers in
 * a StreamProcessor as `redsource process` runs them (app defaults: 12 partitions, batch 500,
 * rebalance every 1 s...), on its own Redis connections, in its own process. It connects the way the
 * app connects: `openRedisConnection` asks the server whether it is a cluster and returns the usual
 * client or the ioredis Cluster client (passed on typed as `Redis`, as the app does). The settings
 * given on the command line are applied over the defaults (the bench publishes the counters every
 * 250 ms instead of 2 s, so it reads the final ones from the stats hash at once).
 *
 * Posts the mode the server reported (the cluster bench refuses anything but `cluster`), then
 * `ready`; starts its processor on `go` (then posts `started`); on `stop` stops it gracefully and
 * posts its peak RSS and counters.
 *
 * argv: redisUrl (one URL, or a cluster's seed list) streamsJson keyPrefix projection group consumer settingsJson
 */
import type { Redis } from 'ioredis';
import { RedisEventStore } from '@redsource/event-store';
import { StreamProcessor, type ProcessorSettingsInput } from '@redsource/processor';
import { SnapshotStore } from '@redsource/snapshot-store';
import { profileCatalog, type ProfileStreams } from '../../apps/profile-api/src/domain/events.ts';
import { profileHandlers } from '../../apps/profile-api/src/domain/handlers.ts';
import { openRedisConnection } from '../../apps/profile-api/src/runtime/redis-connection.ts';
import { arg, nextMessage, peakRssMiB, post, profileWindow, runWorker } from './worker-side.ts';

runWorker(async () => {
  const streams = JSON.parse(arg(1, 'streams')) as ProfileStreams;
  const consumer = arg(5, 'consumer');
  const settings = JSON.parse(arg(6, 'settings')) as ProcessorSettingsInput;
  const connection = await openRedisConnection(arg(0, 'redisUrl'), `bench:${consumer}`);
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
  const profiled = await profileWindow();
  await processor.start();
  post({ type: 'started' });
  await nextMessage('stop');
  await processor.stop();
  await profiled();
  post({ type: 'stopped', peakRssMiB: peakRssMiB(), stats: processor.stats() });
  redis.disconnect();
});
