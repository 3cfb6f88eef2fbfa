/**
 * Child process of the partitioned processing runs (bench/processing.ts): one redsource processor,
 * the profile handlers in a StreamProcessor as `redsource process` runs them (app defaults: 12
 * partitions, batch 500, rebalance every 1 s...), on its own Redis connections, in its own process.
 * The settings given on the command line are applied over the defaults (the bench publishes the
 * counters every 250 ms instead of 2 s, so it reads the final ones from the stats hash at once).
 *
 * Starts its processor on `go` (then posts `started`); on `stop` stops it gracefully and posts its
 * peak RSS and counters. The parent measures its CPU from /proc.
 *
 * argv: redisUrl streamsJson keyPrefix projection group consumer settingsJson
 */
import { RedisEventStore } from '@redsource/event-store';
import { StreamProcessor, type ProcessorSettingsInput } from '@redsource/processor';
import { SnapshotStore } from '@redsource/snapshot-store';
import { profileCatalog, type ProfileStreams } from '../../apps/profile-api/src/domain/events.ts';
import { profileHandlers } from '../../apps/profile-api/src/domain/handlers.ts';
import { connectRedis } from '../../apps/profile-api/src/runtime/redis.ts';
import { arg, nextMessage, peakRssMiB, post, runWorker } from './worker-side.ts';

runWorker(async () => {
  const streams = JSON.parse(arg(1, 'streams')) as ProfileStreams;
  const consumer = arg(5, 'consumer');
  const settings = JSON.parse(arg(6, 'settings')) as ProcessorSettingsInput;
  const redis = connectRedis(arg(0, 'redisUrl'), `bench:${consumer}`);
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
  post({ type: 'ready' });
  await nextMessage('go');
  await processor.start();
  post({ type: 'started' });
  await nextMessage('stop');
  await processor.stop();
  post({ type: 'stopped', peakRssMiB: peakRssMiB(), stats: processor.stats() });
  redis.disconnect();
});
