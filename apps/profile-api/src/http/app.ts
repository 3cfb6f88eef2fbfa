import Fastify, { type FastifyBaseLogger, type FastifyInstance } from 'fastify';
import {
  hasZodFastifySchemaValidationErrors,
  serializerCompiler,
  validatorCompiler,
  type ZodTypeProvider,
} from 'fastify-type-provider-zod';
import type { StreamStatus } from '@redsource/processor';
import type { SnapshotStore } from '@redsource/snapshot-store';
import { registerDocs } from './docs.ts';
import { frameworkErrors, genReqId, registerEdge, type CorsOrigins, type RateLimitSettings } from './edge.ts';
import { ApiError, clientErrorBody, errorBody } from './errors.ts';
import { healthRoutes, type Readiness } from './routes/health.ts';
import { profileRoutes } from './routes/profiles.ts';
import { metricsRoutes } from './routes/metrics.ts';
import { dashboardRoutes, type RebuildProgress } from './routes/dashboard.ts';

export interface AppOptions {
  readonly snapshots: SnapshotStore;
  readonly readiness: () => Promise<Readiness>;
  /** Per-stream processing figures (for /metrics and /dashboard); read from Redis, so any process can serve them. */
  readonly status?: () => Promise<readonly StreamStatus[]>;
  /** A rebuild (`redsource replay`) in progress, for the dashboard. */
  readonly rebuild?: () => Promise<RebuildProgress | undefined>;
  /** Pino logger for request logs; none = silent. */
  readonly logger?: FastifyBaseLogger;
  /** The configured stream names: what `GET /users/:id/profile?after=<stream>:<entry id>` may name (none: `after` is refused). */
  readonly streams?: readonly string[];
  /** Per client IP; absent or `max: 0` = no limit. */
  readonly rateLimit?: RateLimitSettings | undefined;
  /** Absent = no CORS headers. */
  readonly cors?: CorsOrigins | undefined;
}

/** The HTTP API, not listening yet: tests use `app.inject()`. */
export async function buildApp(options: AppOptions): Promise<FastifyInstance> {
  // Request ids: the caller's safe x-request-id, else a UUID (genReqId reads the header itself, so it can
  // refuse unsafe ones). Requests arriving during close() get the API's own 503 (edge.ts); in-flight ones finish.
  const fastifyOptions = { genReqId, requestIdHeader: false, return503OnClosing: false, frameworkErrors } as const;
  const app = (
    options.logger ? Fastify({ ...fastifyOptions, loggerInstance: options.logger }) : Fastify({ ...fastifyOptions, logger: false })
  ).withTypeProvider<ZodTypeProvider>();
  app.setValidatorCompiler(validatorCompiler);
  app.setSerializerCompiler(serializerCompiler);

  app.setErrorHandler((error, request, reply) => {
    if (hasZodFastifySchemaValidationErrors(error)) {
      const detail = error.validation.map((v) => v.message).join('; ');
      return reply.code(400).send(errorBody('badRequest', detail));
    }
    if (error instanceof ApiError) return reply.code(error.statusCode).send(error.body);
    const status = typeof error === 'object' && error && 'statusCode' in error ? Number(error.statusCode) : 500;
    if (status === 429) return reply.code(429).send(errorBody('rateLimited', (error as Error).message));
    if (status >= 400 && status < 500) return reply.code(status).send(clientErrorBody(status, (error as Error).message));
    request.log.error({ err: error }, 'request failed');
    const redisDown = error instanceof Error && /Connection is closed|ECONNREFUSED|max retries|Stream isn't writeable/i.test(error.message);
    return redisDown
      ? reply.code(503).send(errorBody('unavailable', 'Redis is not reachable right now; retry shortly.'))
      : reply.code(500).send(errorBody('internal', 'Unexpected error; see the service log.'));
  });
  app.setNotFoundHandler((request, reply) => reply.code(404).send(errorBody('notFound', `No route ${request.method} ${request.url}`)));

  // Before every route: the OpenAPI document collects routes as they are added; the rate limit hooks them.
  await registerDocs(app);
  await registerEdge(app, options);
  await app.register(metricsRoutes, { status: options.status });
  await app.register(dashboardRoutes, { status: options.status, rebuild: options.rebuild });

  await app.register(healthRoutes, { readiness: options.readiness });
  await app.register(profileRoutes, { snapshots: options.snapshots, streams: options.streams ?? [] });
  return app;
}
