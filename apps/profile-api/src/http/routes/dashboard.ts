import { readFile } from 'node:fs/promises';
import type { FastifyPluginAsync, FastifyReply } from 'fastify';
import type { StreamStatus } from '@redsource/processor';
import { errorBody } from '../errors.ts';

/** A running rebuild, as the page shows it: phase and entries folded of the total. */
export interface RebuildProgress {
  readonly phase: string;
  readonly done: number;
  readonly total: number;
  readonly startedAt?: number;
  readonly updatedAt?: number;
}

export interface DashboardOptions {
  /** Per-stream figures, read from Redis; without it the page says there is nothing to show. */
  readonly status?: (() => Promise<readonly StreamStatus[]>) | undefined;
  /** A running rebuild, if any; the page keeps a panel for it. */
  readonly rebuild?: (() => Promise<RebuildProgress | undefined>) | undefined;
}

/** What `GET /dashboard/status.json` answers: the streams' status and, when known, a rebuild in progress. */
export interface DashboardStatus {
  /** Server time of the reading (ms since epoch): the page computes rates from it. */
  readonly at: number;
  readonly streams: readonly StreamStatus[];
  readonly rebuild?: RebuildProgress | undefined;
}

const ASSETS = new URL('../dashboard/', import.meta.url);

const assets = {
  'app.js': 'text/javascript; charset=utf-8',
  'app.css': 'text/css; charset=utf-8',
} as const;

/** The page loads only its own script and style and talks only to this origin; nothing inline runs. */
const PAGE_POLICY = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

const common = (reply: FastifyReply) => reply.header('x-content-type-options', 'nosniff').header('cache-control', 'no-cache');

/**
 * `GET /dashboard`: one static page (no build step) that polls `GET /dashboard/status.json` every
 * second and draws every stream's figures, consumers, a processing-rate sparkline and rebuild progress.
 */
export const dashboardRoutes: FastifyPluginAsync<DashboardOptions> = async (app, { status, rebuild }) => {
  const page = await readFile(new URL('index.html', ASSETS), 'utf8');
  const files = new Map<string, string>();
  for (const name of Object.keys(assets)) files.set(name, await readFile(new URL(name, ASSETS), 'utf8'));

  // The page and its files are static and in memory: not rate limited, not in the OpenAPI document.
  const hidden = { schema: { hide: true }, config: { rateLimit: false } } as const;
  app.get('/dashboard', { ...hidden, schema: { summary: 'Processing dashboard (HTML)', tags: ['operations'] } }, async (_request, reply) =>
    common(reply).header('content-type', 'text/html; charset=utf-8').header('content-security-policy', PAGE_POLICY).header('referrer-policy', 'no-referrer').send(page),
  );
  // The page's URLs are relative to /dashboard; with a trailing slash they would miss, so send it there.
  app.get('/dashboard/', hidden, async (_request, reply) => reply.redirect('../dashboard', 301));

  for (const [name, type] of Object.entries(assets)) {
    app.get(`/dashboard/${name}`, hidden, async (_request, reply) => common(reply).header('content-type', type).send(files.get(name)));
  }

  // A limit of its own (when the app has one at all): an open page polls once a second, a few per client are fine.
  const statusRoute = {
    schema: { summary: 'What the dashboard shows, as JSON', description: 'Per-stream status (as `redsource status --json`), the reading time and any running rebuild.', tags: ['operations'] },
    config: { rateLimit: { max: 300, timeWindow: 60_000 } },
  };
  app.get('/dashboard/status.json', statusRoute, async (request, reply) => {
    reply.header('cache-control', 'no-store');
    if (!status) return reply.code(503).send(errorBody('unavailable', 'This process has no processing status to show.'));
    try {
      const [streams, running] = await Promise.all([status(), rebuild ? rebuild().catch(() => undefined) : undefined]);
      const body: DashboardStatus = { at: Date.now(), streams, rebuild: running };
      return reply.send(body);
    } catch (error) {
      request.log.warn({ err: error }, 'dashboard: status not readable');
      return reply.code(503).send(errorBody('unavailable', 'Redis is not reachable right now; retrying.'));
    }
  });
};
