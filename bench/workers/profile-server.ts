/**
 * The profile app as `redsource serve` wires it (profileComponents, buildApp with the configured
 * streams and edge options), with request logging off and RATE_LIMIT_MAX=0 (no rate limit: its
 * default, 1000 requests/s per client, would turn a load test into a test of the 429 answer): the
 * HTTP API, and with withProcessor=1 a StreamProcessor beside it in the same process. Listens on a
 * free port, reports it, runs until `stop`.
 *
 * argv: redisUrl streamsJson keyPrefix group withProcessor(0|1)
 */
import { silentLogger } from '@redsource/processor';
import { loadConfig } from '../../apps/profile-api/src/config.ts';
import type { ProfileStreams } from '../../apps/profile-api/src/domain/events.ts';
import { buildApp } from '../../apps/profile-api/src/http/app.ts';
import { edgeOptions } from '../../apps/profile-api/src/http/edge.ts';
import { profileComponents } from '../../apps/profile-api/src/runtime/components.ts';
import { connectRedis } from '../../apps/profile-api/src/runtime/redis.ts';
import { arg, nextMessage, peakRssMiB, post, profileWindow, runWorker } from '../support/worker-side.ts';

runWorker(async () => {
  const url = arg(0, 'redisUrl');
  const streams = JSON.parse(arg(1, 'streams')) as ProfileStreams;
  const config = loadConfig({
    REDIS_URL: url,
    PORT: '0',
    LOG_LEVEL: 'silent',
    STREAM_UPDATES: streams.updates,
    STREAM_ACTIVITY: streams.activity,
    STREAM_FRIENDS: streams.friends,
    SNAPSHOT_PREFIX: arg(2, 'keyPrefix'),
    REDSOURCE_GROUP: arg(3, 'group'),
    RATE_LIMIT_MAX: '0',
  });
  const redis = connectRedis(url, 'bench:profile-api');
  const components = profileComponents(config, redis);
  const processor = arg(4, 'withProcessor') === '1' ? components.createProcessor(silentLogger) : undefined;
  await processor?.start();
  const app = await buildApp({
    snapshots: components.snapshots,
    streams: Object.values(components.streams),
    ...edgeOptions(config),
    readiness: async () => ({ redis: redis.status === 'ready', processor: processor?.running }),
    // Argument 5, when given: PROFILE_CACHE_MB (the bench's uncached API passes 0).
    ...(process.argv[2 + 5] === undefined ? {} : { profileCacheMb: Number(arg(5, 'profileCacheMb')) }),
  });
  await app.listen({ port: config.PORT, host: config.HOST });
  const address = app.server.address();
  const stopProfiling = await profileWindow();
  post({ type: 'ready' });
  post({ type: 'listening', port: typeof address === 'object' && address ? address.port : 0 });
  await nextMessage('stop');
  await stopProfiling();
  await app.close();
  await processor?.stop();
  post({ type: 'stopped', peakRssMiB: peakRssMiB() });
  redis.disconnect();
});
