import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { SNAPSHOT_ID, type SnapshotStore } from '@redsource/snapshot-store';
import { profileSchema, toProfile, type Profile } from '../../domain/profile.ts';
import { commonErrorResponses, errorBody, errorResponse } from '../errors.ts';
import { ifNoneMatchHits, profileEtag } from '../etag.ts';
import { ProfileCache } from '../profile-cache.ts';
import { withinRedisWait } from '../redis-bound.ts';
import {
  MAX_WAIT_MS,
  parseAfter,
  readYourWritesQuery,
  waitForCatchUp,
  type AppliedThroughCheck,
} from '../read-your-writes.ts';

/** The pattern admits nothing but a snapshot id, so a request can only ever read `<prefix><id>`. */
const params = z.object({
  id: z
    .string()
    .regex(SNAPSHOT_ID, 'id must be 1-64 characters from A-Z, a-z, 0-9, _ and - (e.g. /users/42/profile)')
    .describe('The user id: 1-64 characters from A-Z, a-z, 0-9, _ and -'),
});

/** Loose: the validated value replaces `request.headers`, which must keep every other header. */
const headers = z.looseObject({
  'if-none-match': z
    .string()
    .optional()
    .describe('An ETag from an earlier answer: 304 with no body while the profile is unchanged.'),
});

export interface ProfileRoutesOptions {
  readonly snapshots: SnapshotStore;
  /** The streams `after=<stream>:<entry id>` may name. */
  readonly streams?: readonly string[];
  /** Whether a user's snapshot reflects a stream up to an entry (see AppliedPositions). */
  readonly appliedThrough: AppliedThroughCheck;
  /** Bytes of rendered profiles kept (see ProfileCache); 0 = none. */
  readonly cacheBytes: number;
}

export const profileRoutes: FastifyPluginAsyncZod<ProfileRoutesOptions> = async (
  app,
  { snapshots, streams = [], appliedThrough, cacheBytes },
) => {
  const cache = new ProfileCache(cacheBytes);
  app.get(
    '/users/:id/profile',
    {
      schema: {
        tags: ['profiles'],
        summary: 'A user profile, as folded from the streams',
        params,
        querystring: readYourWritesQuery(streams),
        headers,
        response: {
          200: profileSchema.describe('The profile. Headers: ETag (weak), Cache-Control: no-cache.'),
          304: z.null().optional().describe('Not Modified: the If-None-Match tag is still current. No body.'),
          400: errorResponse('Malformed id, after or wait (RS_BAD_REQUEST); the message says what is allowed.'),
          404: errorResponse('No such user, or the user is deleted (RS_NOT_FOUND).'),
          504: errorResponse(
            `With after: the snapshots did not catch up with that entry within wait ms (RS_NOT_CAUGHT_UP); retry, or wait longer (at most ${MAX_WAIT_MS}).`,
          ),
          ...commonErrorResponses,
        },
      },
    },
    async (request, reply) => {
      const { id } = request.params;
      const after = request.query.after === undefined ? undefined : parseAfter(request.query.after);
      if (after) {
        const gone = new AbortController();
        reply.raw.once('close', () => gone.abort());
        const outcome = await waitForCatchUp(appliedThrough, id, after, request.query.wait, gone.signal);
        if (!outcome.caughtUp) {
          return reply
            .code(504)
            .header('retry-after', '1')
            .send(
              errorBody(
                'notCaughtUp',
                `The snapshots have not applied ${after.stream} up to ${after.entryId} within ${request.query.wait} ms ` +
                  `(user ${id}'s partition is applied up to ${outcome.cursor}); retry, or ask with a longer wait (at most ${MAX_WAIT_MS}).`,
              ),
            );
        }
      }
      // With a rendering kept, the version first (two small fields): while it is the one that rendering was
      // made from, it is sent again. With none kept, the whole snapshot at once.
      const current = cache.holds(id) ? await withinRedisWait(snapshots.version(id)) : undefined;
      let rendered = current && cache.get(id, current);
      if (!rendered) {
        const read = await withinRedisWait(snapshots.readVersioned(id));
        const profile = toProfile(read?.snapshot);
        if (!read || !profile) return reply.code(404).send(errorBody('notFound', `No profile for user '${id}'.`));
        // Serialised once, here: the ETag hashes exactly the bytes sent, and a string body skips the
        // schema serializer (the profile is built by toProfile from a checked snapshot; the schema
        // above documents it).
        const body = JSON.stringify(profile);
        rendered = { body, etag: profileEtag(read.snapshot.revision, body) };
        cache.set(id, read.version, rendered);
      }
      const { body, etag } = rendered;
      void reply.header('etag', etag).header('cache-control', 'no-cache');
      if (ifNoneMatchHits(request.headers['if-none-match'], etag)) return reply.code(304).send(undefined);
      // Fastify sends a string with a JSON content type as it is; the cast only tells the type provider so.
      return reply.type('application/json; charset=utf-8').send(body as unknown as Profile);
    },
  );
};
