import { readFile } from 'node:fs/promises';
import type { FastifyReply } from 'fastify';
import { serializerCompiler, validatorCompiler, type FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { z } from 'zod';
import type { StreamStatus } from '@redsource/processor';
import { commonErrorResponses, errorBody, errorResponse } from '../errors.ts';
import { statusCache, type RebuildProgress } from './dashboard-status.ts';

export type { AppliedHistory, DashboardStatus, RebuildProgress } from './dashboard-status.ts';

/** A dead letter as the dashboard lists it: where it came from and why, not its fields (they may hold personal data). */
export interface DeadLetterSummary {
  readonly id: string;
  readonly entryId: string;
  readonly reason: string;
  readonly deadAt: number;
}

export interface DashboardOptions {
  /** Per-stream figures, read from Redis; without it the page says there is nothing to show. */
  readonly status?: (() => Promise<readonly StreamStatus[]>) | undefined;
  /** A running rebuild, if any; the page keeps a panel for it. */
  readonly rebuild?: (() => Promise<RebuildProgress | undefined>) | undefined;
  /** A stream's dead letters, oldest first, at most `count`; without it the page shows only the `redsource dlq` command. */
  readonly deadLetters?: ((stream: string, count: number) => Promise<readonly DeadLetterSummary[]>) | undefined;
  /** The streams whose dead letters may be listed (the configured ones). */
  readonly streams?: readonly string[] | undefined;
  /** How long one status reading answers every open page (default 1 s). */
  readonly statusTtlMs?: number | undefined;
}

/** Open pages per client address: each polls once a second (status.json answers them all from one read a second). */
export const DASHBOARD_PAGES_PER_CLIENT = 50;
/** How long a page waits before asking again while Redis is unreachable. */
const UNAVAILABLE_RETRY_S = 2;
const DEAD_LETTERS_SHOWN = 100;

/** status.json's body as the document shows it; each stream row is `redsource status --json`'s (more fields than named here). */
const statusSchema = z
  .looseObject({
    at: z.number().describe('When Redis was read (ms since epoch).'),
    streams: z.array(
      z.looseObject({
        stream: z.string(),
        length: z.number(),
        lag: z
          .number()
          .optional()
          .describe(
            "Entries not yet routed into the group's partitions; absent while the group does not exist on the stream.",
          ),
        unapplied: z.number().describe('Entries routed into the partitions and not yet applied.'),
        applied: z.number(),
        deadLetters: z.number(),
        partitions: z
          .array(
            z.looseObject({
              partition: z.number(),
              owner: z
                .string()
                .optional()
                .describe('The processor holding the partition now; absent while it is free.'),
              cursor: z.string().describe('Last entry id applied in the partition.'),
              unapplied: z.number().describe('Entries routed to the partition and not yet applied.'),
            }),
          )
          .describe('Every partition of the stream, partition 0 first.'),
      }),
    ),
    rebuild: z.looseObject({ phase: z.string(), done: z.number(), total: z.number() }).optional(),
    history: z
      .array(
        z.object({
          stream: z.string(),
          samples: z.array(z.tuple([z.number(), z.number()])).describe('[at, applied] pairs, oldest first.'),
        }),
      )
      .optional(),
  })
  .describe('The figures of one reading (shared by every caller for a second).');

const ASSETS = new URL('../dashboard/', import.meta.url);

const assets = {
  'app.js': 'text/javascript; charset=utf-8',
  'app.css': 'text/css; charset=utf-8',
} as const;

/** The page loads only its own script and style and talks only to this origin; nothing inline runs. */
const PAGE_POLICY =
  "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

const common = (reply: FastifyReply) =>
  reply.header('x-content-type-options', 'nosniff').header('cache-control', 'no-cache');

/**
 * `GET /dashboard`: one static page (no build step) that polls `GET /dashboard/status.json` every
 * second and draws every stream's figures, its partitions (owner, cursor, unapplied), the group's
 * processors, a processing-rate sparkline and rebuild progress.
 */
export const dashboardRoutes: FastifyPluginAsyncZod<DashboardOptions> = async (app, options) => {
  // Its own zod compilers (the app's same ones), so the plugin also stands alone in a bare Fastify.
  app.setValidatorCompiler(validatorCompiler);
  app.setSerializerCompiler(serializerCompiler);
  const page = await readFile(new URL('index.html', ASSETS), 'utf8');
  const files = new Map<string, string>();
  for (const name of Object.keys(assets)) files.set(name, await readFile(new URL(name, ASSETS), 'utf8'));

  // The page and its files are static and in memory: not rate limited; only the page is in the OpenAPI document.
  const hidden = { schema: { hide: true }, config: { rateLimit: false } } as const;
  app.get(
    '/dashboard',
    { config: { rateLimit: false }, schema: { summary: 'Processing dashboard (HTML)', tags: ['operations'] } },
    async (_request, reply) =>
      common(reply)
        .header('content-type', 'text/html; charset=utf-8')
        .header('content-security-policy', PAGE_POLICY)
        .header('referrer-policy', 'no-referrer')
        .send(page),
  );
  // The page's URLs are relative to /dashboard; with a trailing slash they would miss, so send it there.
  app.get('/dashboard/', hidden, async (_request, reply) => reply.redirect('../dashboard', 301));

  for (const [name, type] of Object.entries(assets)) {
    app.get(`/dashboard/${name}`, hidden, async (_request, reply) =>
      common(reply).header('content-type', type).send(files.get(name)),
    );
  }

  const cache =
    options.status &&
    statusCache(
      { status: options.status, rebuild: options.rebuild, ttlMs: options.statusTtlMs ?? 1000 },
      () => app.log,
    );
  // A limit of its own (when the app has one at all), far above the pages a team keeps open: they cost one Redis read a second together.
  const pagesLimit = { rateLimit: { max: DASHBOARD_PAGES_PER_CLIENT * 60, timeWindow: 60_000 } };
  app.get(
    '/dashboard/status.json',
    {
      config: pagesLimit,
      schema: {
        summary: 'What the dashboard shows, as JSON',
        description:
          'Per-stream status (as `redsource status --json`), the reading time and any running rebuild; with `history=1` also the applied ' +
          'totals of the last minutes. One reading a second serves every caller. 503 (with Retry-After) while Redis is unreachable.',
        tags: ['operations'],
        querystring: z.object({
          history: z.enum(['0', '1']).optional().describe('1: include the applied totals of the last 5 minutes.'),
        }),
        response: {
          200: statusSchema,
          503: errorResponse('Redis is not reachable (RS_UNAVAILABLE); retry after Retry-After seconds.'),
          429: commonErrorResponses[429],
        },
      },
    },
    async (request, reply) => {
      void reply.header('cache-control', 'no-store');
      if (!cache)
        return reply.code(503).send(errorBody('unavailable', 'This process has no processing status to show.'));
      const reading = await cache.read();
      if (!reading.ok) {
        return reply
          .code(503)
          .header('retry-after', String(UNAVAILABLE_RETRY_S))
          .send(
            errorBody(
              'unavailable',
              `Redis is not reachable (since ${new Date(reading.since).toISOString()}); retrying.`,
            ),
          );
      }
      const body = {
        at: reading.status.at,
        rebuild: reading.status.rebuild && { ...reading.status.rebuild },
        streams: reading.status.streams.map((row) => ({ ...row, partitions: row.partitions.map((p) => ({ ...p })) })),
      };
      return reply.send(
        request.query.history === '1'
          ? {
              ...body,
              history: cache.history().map((h) => ({
                stream: h.stream,
                samples: h.samples.map(([at, applied]): [number, number] => [at, applied]),
              })),
            }
          : body,
      );
    },
  );

  const streams = new Set(options.streams ?? []);
  const deadLetterSchema = z.object({ id: z.string(), entryId: z.string(), reason: z.string(), deadAt: z.number() });
  app.get(
    '/dashboard/dead-letters.json',
    {
      config: pagesLimit,
      schema: {
        summary: "A stream's dead letters (read-only)",
        description: `The oldest ${DEAD_LETTERS_SHOWN} dead letters of a configured stream: ids, why, when. Not their fields (they may hold personal data): \`redsource dlq show <stream> <id>\`.`,
        tags: ['operations'],
        querystring: z.object({
          stream: z.string().min(1).max(1024).describe('A configured stream, e.g. user_updates.'),
        }),
        response: {
          200: z
            .object({
              stream: z.string(),
              command: z.string().describe('The CLI command that lists them, and can retry or drop them.'),
              deadLetters: z.array(deadLetterSchema),
            })
            .describe('The dead letters, oldest first.'),
          404: errorResponse('Not a configured stream (RS_NOT_FOUND).'),
          ...commonErrorResponses,
        },
      },
    },
    async (request, reply) => {
      void reply.header('cache-control', 'no-store');
      const { stream } = request.query;
      if (!streams.has(stream))
        return reply.code(404).send(errorBody('notFound', `'${stream}' is not one of the configured streams.`));
      if (!options.deadLetters)
        return reply.code(503).send(errorBody('unavailable', 'This process cannot list dead letters.'));
      const rows = await options.deadLetters(stream, DEAD_LETTERS_SHOWN);
      return {
        stream,
        command: dlqCommand(stream),
        deadLetters: rows.map(({ id, entryId, reason, deadAt }) => ({ id, entryId, reason, deadAt })),
      };
    },
  );
};

/** The CLI command that lists a stream's dead letters (quoted for a POSIX shell when the name needs it). */
export function dlqCommand(stream: string): string {
  return `redsource dlq list ${/^[A-Za-z0-9_.:-]+$/.test(stream) ? stream : `'${stream.replace(/'/g, `'\\''`)}'`}`;
}
