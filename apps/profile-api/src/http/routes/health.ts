import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { z } from 'zod';

export interface Readiness {
  readonly redis: boolean;
  /** Undefined where this process runs no processor (the `api` command). */
  readonly processor: boolean | undefined;
}

const readySchema = z.object({ status: z.enum(['ready', 'not ready']), redis: z.enum(['up', 'down']), processor: z.enum(['running', 'stopped', 'not in this process']) });

export const healthRoutes: FastifyPluginAsyncZod<{ readiness: () => Promise<Readiness> }> = async (app, { readiness }) => {
  app.get('/healthz', { schema: { response: { 200: z.object({ status: z.literal('ok') }) } } }, async () => ({ status: 'ok' as const }));

  app.get('/readyz', { schema: { response: { 200: readySchema, 503: readySchema } } }, async (_request, reply) => {
    const state = await readiness();
    const ready = state.redis && state.processor !== false;
    return reply.code(ready ? 200 : 503).send({
      status: ready ? 'ready' : 'not ready',
      redis: state.redis ? 'up' : 'down',
      processor: state.processor === undefined ? 'not in this process' : state.processor ? 'running' : 'stopped',
    });
  });
};
