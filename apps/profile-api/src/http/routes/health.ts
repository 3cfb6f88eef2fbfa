import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { errorResponse, errorSchema } from '../errors.ts';

export interface Readiness {
  readonly redis: boolean;
  /** Undefined where this process runs no processor (the `api` command). */
  readonly processor: boolean | undefined;
}

const readySchema = z.object({ status: z.enum(['ready', 'not ready']), redis: z.enum(['up', 'down']), processor: z.enum(['running', 'stopped', 'not in this process']) });

export const healthRoutes: FastifyPluginAsyncZod<{ readiness: () => Promise<Readiness> }> = async (app, { readiness }) => {
  // Probes are not rate limited: a busy client behind the same address must not fail them.
  app.get(
    '/healthz',
    {
      config: { rateLimit: false },
      schema: {
        tags: ['health'],
        summary: 'Liveness: 200 while the process is up',
        response: { 200: z.object({ status: z.literal('ok') }).describe('The process is up.'), 500: errorResponse('Unexpected error (RS_INTERNAL).') },
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
        summary: 'Readiness: Redis connected and the processor (if this process runs one) running',
        response: {
          200: readySchema.describe('Ready to serve.'),
          503: z.union([readySchema, errorSchema]).describe('Not ready (which part is down), or the error body while the service shuts down.'),
          500: errorResponse('Unexpected error (RS_INTERNAL).'),
        },
      },
    },
    async (_request, reply) => {
      const state = await readiness();
      const ready = state.redis && state.processor !== false;
      return reply.code(ready ? 200 : 503).send({
        status: ready ? 'ready' : 'not ready',
        redis: state.redis ? 'up' : 'down',
        processor: state.processor === undefined ? 'not in this process' : state.processor ? 'running' : 'stopped',
      });
    },
  );
};
