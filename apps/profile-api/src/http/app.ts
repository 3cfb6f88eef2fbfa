import Fastify, { type FastifyBaseLogger, type FastifyInstance, type FastifySchemaValidationError } from 'fastify';
import {
  hasZodFastifySchemaValidationErrors,
  serializerCompiler,
  validatorCompiler,
  type ZodTypeProvider,
} from 'fastify-type-provider-zod';
import {
  AppliedPositions,
  processorSettingsSchema,
  type AppliedPositionsPartitioning,
  type StreamStatus,
} from '@redsource/processor';
import type { SnapshotStore } from '@redsource/snapshot-store';
import { registerDocs } from './docs.ts';
import { RequestLogController } from './request-log.ts';
import { createRedactor, type Redactor } from '../runtime/redact.ts';
import { unavailableKindOf } from '../runtime/redis.ts';
import { boundedRead } from './redis-bound.ts';
import {
  clientErrorHandler,
  frameworkErrors,
  genReqId,
  registerEdge,
  type CorsOrigins,
  type RateLimitSettings,
} from './edge.ts';
import { ApiError, clientErrorBody, errorBody } from './errors.ts';
import { healthRoutes, type Readiness } from './routes/health.ts';
import { DEFAULT_PROFILE_CACHE_MB } from '../config.ts';
import { profileRoutes } from './routes/profiles.ts';
import { metricsRoutes } from './routes/metrics.ts';
import { dashboardRoutes, type DeadLetterSummary, type RebuildProgress } from './routes/dashboard.ts';

export interface AppOptions {
  readonly snapshots: SnapshotStore;
  readonly readiness: () => Promise<Readiness>;
  /** Per-stream processing figures (for /metrics and /dashboard); read from Redis, so any process can serve them. */
  readonly status?: () => Promise<readonly StreamStatus[]>;
  /** A rebuild (`redsource replay`) in progress, for the dashboard. */
  readonly rebuild?: () => Promise<RebuildProgress | undefined>;
  /** A stream's dead letters (oldest first, at most `count`), for the dashboard's read-only list. */
  readonly deadLetters?: (stream: string, count: number) => Promise<readonly DeadLetterSummary[]>;
  /** Pino logger for request logs; none = silent. */
  readonly logger?: FastifyBaseLogger;
  /** The configured stream names: what `GET /users/:id/profile?after=<stream>:<entry id>` may name (none: `after` is refused). */
  readonly streams?: readonly string[];
  /**
   * How the processors apply the snapshots (their group and partition count), so `after` can tell
   * when a user's partition has caught up. Default: group `profile-api`, the processor's default count.
   */
  readonly partitioning?: AppliedPositionsPartitioning;
  /** Per client IP; absent or `max: 0` = no limit. */
  readonly rateLimit?: RateLimitSettings | undefined;
  /** Absent = no CORS headers. */
  readonly cors?: CorsOrigins | undefined;
  /** What every logged error and error message passes through; absent = URLs' passwords and command arguments only. */
  readonly redactor?: Redactor | undefined;
  /** MiB of rendered profiles kept (PROFILE_CACHE_MB); absent = its default, 0 = none. */
  readonly profileCacheMb?: number;
}

const DEFAULT_PARTITIONING = {
  group: 'profile-api',
  partitions: processorSettingsSchema.shape.partitions.parse(undefined),
};

/** The HTTP API, not listening yet: tests use `app.inject()`. */
export async function buildApp(options: AppOptions): Promise<FastifyInstance> {
  // Request ids: the caller's safe x-request-id, else a UUID (genReqId reads the header itself, so it can
  // refuse unsafe ones). Requests arriving during close() get the API's own 503 (edge.ts); in-flight ones finish.
  // Node's HTTP parser errors (431, an unknown method, a bad header) get the API's error shape too (edge.ts).
  // Request lines of the polled routes (dashboard, /metrics, probes) at debug (request-log.ts).
  const logController = new RequestLogController();
  const fastifyOptions = {
    genReqId,
    requestIdHeader: false,
    return503OnClosing: false,
    frameworkErrors,
    clientErrorHandler,
    logController,
  } as const;
  const redactor = options.redactor ?? createRedactor();
  const app = (
    options.logger
      ? Fastify({ ...fastifyOptions, loggerInstance: options.logger })
      : Fastify({ ...fastifyOptions, logger: false })
  ).withTypeProvider<ZodTypeProvider>();
  app.setValidatorCompiler(validatorCompiler);
  app.setSerializerCompiler(serializerCompiler);

  app.setErrorHandler((error, request, reply) => {
    if (hasZodFastifySchemaValidationErrors(error)) {
      // Typed here: the provider's own type refers to 'fastify/types/schema', which fastify's exports do not resolve.
      const detail = error.validation.map((v: FastifySchemaValidationError) => v.message).join('; ');
      return reply.code(400).send(errorBody('badRequest', detail));
    }
    if (error instanceof ApiError) {
      if (error.statusCode === 503) void reply.header('retry-after', '1');
      return reply.code(error.statusCode).send(error.body);
    }
    const status = typeof error === 'object' && error && 'statusCode' in error ? Number(error.statusCode) : 500;
    if (status === 429) return reply.code(429).send(errorBody('rateLimited', (error as Error).message));
    if (status >= 400 && status < 500) return reply.code(status).send(clientErrorBody(status, redactor.message(error)));
    // A refused login (WRONGPASS, NOAUTH), a missing permission (NOPERM) or a lost connection is Redis's state: 503.
    if (unavailableKindOf(error)) {
      // The outage itself is logged once by the service's Redis watch: one line per request would drown it.
      request.log.debug({ err: redactor.value(error) }, 'request failed: Redis unavailable');
      return reply
        .code(503)
        .header('retry-after', '1')
        .send(errorBody('unavailable', 'Redis is not available right now; retry shortly.'));
    }
    request.log.error({ err: redactor.value(error) }, 'request failed');
    return reply.code(500).send(errorBody('internal', 'Unexpected error; see the service log.'));
  });

  // Errors out of the status read reach the dashboard's and metrics' own handling without any command argument.
  // Each bounded (redis-bound.ts): with Redis away, /metrics and the dashboard answer within a second too.
  const readStatus = options.status && boundedRead(options.status);
  const status = readStatus && (() => readStatus().catch((error: unknown) => Promise.reject(redactor.error(error))));
  const rebuild = options.rebuild && boundedRead(options.rebuild);

  // Before every route: the rate limit hooks every route added after it (the docs' too), and the
  // OpenAPI document collects routes as they are added.
  await registerEdge(app, options);
  await registerDocs(app);
  await app.register(metricsRoutes, { status });
  const listDeadLetters = options.deadLetters && boundedRead(options.deadLetters);
  const deadLetters =
    listDeadLetters &&
    (async (stream: string, count: number) =>
      redactor.value(await listDeadLetters(stream, count)) as DeadLetterSummary[]);
  await app.register(dashboardRoutes, { status, rebuild, deadLetters, streams: options.streams });

  await app.register(healthRoutes, { readiness: options.readiness });
  const positions = new AppliedPositions(
    options.snapshots.redis,
    options.snapshots,
    options.partitioning ?? DEFAULT_PARTITIONING,
  );
  await app.register(profileRoutes, {
    snapshots: options.snapshots,
    streams: options.streams ?? [],
    appliedThrough: (stream, subject, entryId) => positions.through(stream, subject, entryId),
    cacheBytes: (options.profileCacheMb ?? DEFAULT_PROFILE_CACHE_MB) * 1024 * 1024,
  });
  return app;
}
