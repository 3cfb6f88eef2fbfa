import Fastify, { type FastifyBaseLogger, type FastifyInstance } from 'fastify';
import {
  hasZodFastifySchemaValidationErrors,
  serializerCompiler,
  validatorCompiler,
  type ZodTypeProvider,
} from 'fastify-type-provider-zod';
import type { StreamStatus } from '@redsource/processor';
import type { SnapshotStore } from '@redsource/snapshot-store';
import { errorBody } from './errors.ts';
import { healthRoutes, type Readiness } from './routes/health.ts';
import { profileRoutes } from './routes/profiles.ts';

export interface AppOptions {
  readonly snapshots: SnapshotStore;
  readonly readiness: () => Promise<Readiness>;
  /** Per-stream processing figures (for /metrics and /dashboard); read from Redis, so any process can serve them. */
  readonly status?: () => Promise<readonly StreamStatus[]>;
  /** Pino logger for request logs; none = silent. */
  readonly logger?: FastifyBaseLogger;
}

/** The HTTP API, not listening yet: tests use `app.inject()`. */
export async function buildApp(options: AppOptions): Promise<FastifyInstance> {
  const app = (options.logger ? Fastify({ loggerInstance: options.logger }) : Fastify({ logger: false })).withTypeProvider<ZodTypeProvider>();
  app.setValidatorCompiler(validatorCompiler);
  app.setSerializerCompiler(serializerCompiler);

  app.setErrorHandler((error, request, reply) => {
    if (hasZodFastifySchemaValidationErrors(error)) {
      const detail = error.validation.map((v) => v.message).join('; ');
      return reply.code(400).send(errorBody('badRequest', detail));
    }
    const status = typeof error === 'object' && error && 'statusCode' in error ? Number(error.statusCode) : 500;
    if (status >= 400 && status < 500) return reply.code(status).send({ statusCode: status, code: 'RS_BAD_REQUEST', error: 'Bad Request', message: (error as Error).message });
    request.log.error({ err: error }, 'request failed');
    const redisDown = error instanceof Error && /Connection is closed|ECONNREFUSED|max retries|Stream isn't writeable/i.test(error.message);
    return redisDown
      ? reply.code(503).send(errorBody('unavailable', 'Redis is not reachable right now; retry shortly.'))
      : reply.code(500).send(errorBody('internal', 'Unexpected error; see the service log.'));
  });
  app.setNotFoundHandler((request, reply) => reply.code(404).send(errorBody('notFound', `No route ${request.method} ${request.url}`)));

  await app.register(healthRoutes, { readiness: options.readiness });
  await app.register(profileRoutes, { snapshots: options.snapshots });
  return app;
}
