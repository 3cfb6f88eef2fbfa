import type { Redis } from 'ioredis';
import type { Logger as Pino } from 'pino';
import { rebuildState, type StreamStatus } from '@redsource/processor';
import type { AppConfig } from '../config.ts';
import { buildApp, type AppOptions } from '../http/app.ts';
import { edgeOptions } from '../http/edge.ts';
import { appendSeedEvents, type ProfileComponents } from './components.ts';
import type { RedisWatch } from './redis-watch.ts';

/** A service that could not start (its port taken...): one line, nothing left running. */
export class ServiceStartError extends Error {
  readonly code = 'RS_SERVICE_START';
  constructor(message: string) {
    super(message);
    this.name = 'ServiceStartError';
  }
}

export interface ServiceOptions {
  readonly command: 'serve' | 'api' | 'process';
  readonly config: AppConfig;
  readonly components: ProfileComponents;
  readonly logger: Pino;
  readonly redis: Redis;
  readonly watch: RedisWatch;
  /** Append the seed events first (`serve --demo`). */
  readonly demo: boolean;
  readonly readStatus: () => Promise<readonly StreamStatus[]>;
  /** More for the app (e.g. the dashboard's dead-letter list). */
  readonly app?: Partial<AppOptions>;
}

/**
 * Starts what `command` runs and returns what closes it all. The API listens before the processor
 * joins its consumer group, so a port that is taken ends the start with nothing left behind: no
 * consumer in the group for others to wait out, no listener, no timer.
 */
export async function startService(options: ServiceOptions): Promise<() => Promise<void>> {
  const { command, config, components, logger, redis, watch } = options;
  if (options.demo) {
    // The service still comes up without Redis (not ready until it answers); only the demo data waits for a restart.
    await appendSeedEvents(components).then(
      (appended) => logger.info({ appended }, 'demo data: seed events appended'),
      (error: unknown) => logger.warn(`demo data not appended: ${messageOf(watch.explain(error))}`),
    );
  }
  const closers: (() => Promise<unknown>)[] = [];
  const processor =
    command === 'api' ? undefined : components.createProcessor(logger.child({ component: 'processor' }));
  if (command !== 'process') {
    const app = await buildApp({
      snapshots: components.snapshots,
      streams: components.streamNames,
      partitioning: components.partitioning,
      ...edgeOptions(config),
      profileCacheMb: config.PROFILE_CACHE_MB,
      logger: logger.child({ component: 'http' }),
      readiness: async () => ({
        redis: redis.status === 'ready',
        redisReason: watch.downReason(),
        processor: processor?.running,
        waiting: processor?.waiting?.reason,
      }),
      rebuild: () => rebuildState(redis, components.snapshots),
      status: options.readStatus,
      ...options.app,
    });
    try {
      await app.listen({ port: config.PORT, host: config.HOST });
    } catch (error) {
      await app.close();
      throw listenFailure(error, config);
    }
    const address = app.server.address();
    const port = typeof address === 'object' && address ? address.port : config.PORT;
    logger.info(
      { port },
      `profile API listening on http://${config.HOST}:${port} (try: curl http://${config.HOST}:${port}/users/1/profile)`,
    );
    closers.push(() => app.close());
  }
  if (processor) {
    // Not waiting until it is ready: the service comes up while Redis is away (/readyz says so) and
    // the processor takes up its work as soon as Redis answers.
    await processor.start({ waitUntilReady: false });
    closers.push(() => processor.stop());
  }
  return async () => {
    for (const close of closers) await close();
  };
}

function listenFailure(error: unknown, config: Pick<AppConfig, 'PORT' | 'HOST'>): unknown {
  const code = (error as { code?: unknown }).code;
  const where = `${config.HOST}:${config.PORT}`;
  if (code === 'EADDRINUSE')
    return new ServiceStartError(
      `cannot listen on ${where}: the port is in use (another redsource, or another program): stop it or set PORT`,
    );
  if (code === 'EACCES')
    return new ServiceStartError(
      `cannot listen on ${where}: permission denied (ports below 1024 need privileges): set PORT`,
    );
  if (code === 'EADDRNOTAVAIL' || code === 'ENOTFOUND')
    return new ServiceStartError(`cannot listen on ${where}: no such local address: check HOST`);
  return error;
}

const messageOf = (error: unknown) => (error instanceof Error ? error.message : String(error));
