import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { SNAPSHOT_ID, type SnapshotStore } from '@redsource/snapshot-store';
import { profileSchema, toProfile } from '../../domain/profile.ts';
import { errorBody } from '../errors.ts';

const errorSchema = z.object({ statusCode: z.number(), code: z.string(), error: z.string(), message: z.string() });

/** The pattern admits nothing but a snapshot id, so a request can only ever read `<prefix><id>`. */
const params = z.object({
  id: z.string().regex(SNAPSHOT_ID, 'id must be 1-64 characters from A-Z, a-z, 0-9, _ and - (e.g. /users/42/profile)'),
});

export const profileRoutes: FastifyPluginAsyncZod<{ snapshots: SnapshotStore }> = async (app, { snapshots }) => {
  app.get(
    '/users/:id/profile',
    { schema: { params, response: { 200: profileSchema, 404: errorSchema } } },
    async (request, reply) => {
      const profile = toProfile(await snapshots.read(request.params.id));
      if (!profile) return reply.code(404).send(errorBody('notFound', `No profile for user '${request.params.id}'.`));
      return profile;
    },
  );
};
