/**
 * A redsource processor as the profile app runs it (`redsource process`): the profile handlers in a
 * StreamProcessor with the app's defaults (batch 500, exactly-once apply script), on its own Redis
 * connections. Starts on `go`, stops gracefully on `stop`, then reports its peak RSS and CPU time.
 *
 * argv: redisUrl streamsJson keyPrefix projection group consumer [batchSize]
 */
import { RedisEventStore } from '@redsource/event-store';
import { StreamProcessor } from '@redsource/processor';
import { SnapshotStore } from '@redsource/snapshot-store';
import { profileCatalog, type ProfileStreams } from '../../apps/profile-api/src/domain/events.ts';
import { profileHandlers } from '../../apps/profile-api/src/domain/handlers.ts';
import { connectRedis } from '../../apps/profile-api/src/runtime/redis.ts';
import { arg, nextMessage, peakRssMiB, post, profileWindow, runWorker } from '../support/worker-side.ts';

runWorker(async () => {
  const streams = JSON.parse(arg(1, 'streams')) as ProfileStreams;
  const consumer = arg(5, 'consumer');
  const batchSize = process.argv[8] ? { batchSize: Number(process.argv[8]) } : {};
  const redis = connectRedis(arg(0, 'redisUrl'), `bench:${consumer}`);
  const eventStore = new RedisEventStore({ redis, catalog: profileCatalog(streams), source: 'redsource/profile-api' });
  const snapshots = new SnapshotStore({ redis, keyPrefix: arg(2, 'keyPrefix'), projection: arg(3, 'projection') });
  const processor = new StreamProcessor({
    redis,
    eventStore,
    snapshots,
    handlers: profileHandlers(streams),
    group: arg(4, 'group'),
    consumer,
    start: 'beginning',
    ...batchSize,
  });
  await redis.ping();
  post({ type: 'ready' });
  await nextMessage('go');
  const cpuBefore = process.cpuUsage();
  const stopProfiling = await profileWindow();
  await processor.start();
  await nextMessage('stop');
  await processor.stop();
  const cpu = process.cpuUsage(cpuBefore);
  await stopProfiling();
  post({ type: 'stopped', peakRssMiB: peakRssMiB(), cpuMs: (cpu.user + cpu.system) / 1000, stats: processor.stats() });
  redis.disconnect();
});
