import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { errorResponse, errorSchema } from '../errors.ts';

export interface Readiness {
  readonly redis: boolean;
  /** Why Redis is down, as one line without any credential (e.g. a refused login); only while it is. */
  readonly redisReason?: string | undefined;
  /** Undefined where this process runs no processor (the `api` command). */
  readonly processor: boolean | undefined;
  /** Why this process's processor waits on Redis (it refuses writes or is unreachable); undefined while it does not. */
  readonly waiting?: string | undefined;
}

const readySchema = z.object({
  status: z.enum(['ready', 'not ready']),
  redis: z.enum(['up', 'down']),
  reason: z
    .string()
    .optional()
    .describe(
      'Why Redis is down, e.g. `WRONGPASS: Redis at 127.0.0.1:6379 refused the login for user app ...`; never a password; only while it is.',
    ),
  processor: z.enum(['running', 'waiting', 'stopped', 'not in this process']),
  waiting: z
    .string()
    .optional()
    .describe('Why the processor waits on Redis, e.g. `OOM: Redis is out of memory ...`; only while it does.'),
});

export const healthRoutes: FastifyPluginAsyncZod<{ readiness: () => Promise<Readiness> }> = async (
  app,
  { readiness },
) => {
  // Probes are not rate limited: a busy client behind the same address must not fail them.
  app.get(
    '/healthz',
    {
      config: { rateLimit: false },
      schema: {
        tags: ['health'],
        summary: 'Liveness: 200 while the process is up',
        response: {
          200: z.object({ status: z.literal('ok') }).describe('The process is up.'),
          500: errorResponse('Unexpected error (RS_INTERNAL).'),
        },
      },
    },
    async () => ({ status: 'ok' as const }),
  );

  app.get(
    '/readyz',
    {
      config: { rateLimit: false },
      schema: {
        tags: ['health'],
        summary:
          'Readiness: Redis connected and the processor (if this process runs one) running, not waiting on Redis',
        response: {
          200: readySchema.describe('Ready to serve.'),
          503: z
            .union([readySchema, errorSchema])
            .describe(
              'Not ready (which part is down, or why the processor waits), or the error body while the service shuts down.',
            ),
          500: errorResponse('Unexpected error (RS_INTERNAL).'),
        },
      },
    },
    async (_request, reply) => {
      const state = await readiness();
      const waiting = state.processor === true ? state.waiting : undefined;
      const ready = state.redis && state.processor !== false && waiting === undefined;
      return reply.code(ready ? 200 : 503).send({
        status: ready ? 'ready' : 'not ready',
        redis: state.redis ? 'up' : 'down',
        ...(state.redis || state.redisReason === undefined ? {} : { reason: state.redisReason }),
        processor:
          state.processor === undefined
            ? 'not in this process'
            : !state.processor
              ? 'stopped'
              : waiting === undefined
                ? 'running'
                : 'waiting',
        ...(waiting === undefined ? {} : { waiting }),
      });
    },
  );
};
