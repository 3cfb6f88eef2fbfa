import { randomUUID } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import fastifyCors from '@fastify/cors';
import fastifyRateLimit from '@fastify/rate-limit';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { AppConfig } from '../config.ts';
import { ApiError, errorBody } from './errors.ts';

/** Where a request id comes in and goes out. */
export const REQUEST_ID_HEADER = 'x-request-id';

/** An incoming id is kept only if it is this tame: nothing that could forge a log line or a header. */
export const SAFE_REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/;

/** Fastify's `genReqId`: the caller's `x-request-id` if it is safe, else a new UUID. */
export function genReqId(request: IncomingMessage): string {
  const incoming = request.headers[REQUEST_ID_HEADER];
  return typeof incoming === 'string' && SAFE_REQUEST_ID.test(incoming) ? incoming : randomUUID();
}

/** Fastify's `frameworkErrors` (a URL it cannot decode, before any hook runs): the API's error shape too. */
export function frameworkErrors(error: Error, request: FastifyRequest, reply: FastifyReply): void {
  void reply.code(400).header(REQUEST_ID_HEADER, request.id).send(errorBody('badRequest', error.message));
}

export interface RateLimitSettings {
  /** Requests per window per client IP; 0 = no limit. */
  readonly max: number;
  readonly windowMs: number;
}

/** `*` = any origin; a list = exactly these origins; absent = no CORS headers at all. */
export type CorsOrigins = '*' | readonly string[];

export interface EdgeOptions {
  readonly rateLimit?: RateLimitSettings | undefined;
  readonly cors?: CorsOrigins | undefined;
}

/** The edge settings from the environment (RATE_LIMIT_MAX, RATE_LIMIT_WINDOW_MS, CORS_ORIGIN). */
export function edgeOptions(config: Pick<AppConfig, 'RATE_LIMIT_MAX' | 'RATE_LIMIT_WINDOW_MS' | 'CORS_ORIGIN'>): EdgeOptions {
  return { rateLimit: { max: config.RATE_LIMIT_MAX, windowMs: config.RATE_LIMIT_WINDOW_MS }, cors: config.CORS_ORIGIN };
}

/**
 * What every route gets, registered before any route: the request id echoed, a 503 in the API's
 * error shape for requests arriving during shutdown (in-flight ones finish), CORS, the rate limit.
 */
export async function registerEdge(app: FastifyInstance, options: EdgeOptions): Promise<void> {
  let closing = false;
  app.addHook('preClose', async () => {
    closing = true;
  });
  app.addHook('onRequest', async (request, reply) => {
    void reply.header(REQUEST_ID_HEADER, request.id);
    if (closing) {
      // Pre-serialised: the route's own 503 schema (e.g. /readyz's) must not apply to this body.
      return reply
        .code(503)
        .header('connection', 'close')
        .header('retry-after', '1')
        .type('application/json; charset=utf-8')
        .send(JSON.stringify(errorBody('unavailable', 'The service is shutting down; retry on another instance.')));
    }
    return undefined;
  });

  if (options.cors) {
    await app.register(fastifyCors, {
      origin: options.cors === '*' ? '*' : [...options.cors],
      methods: ['GET', 'HEAD', 'OPTIONS'],
      exposedHeaders: ['etag', REQUEST_ID_HEADER, 'retry-after', 'x-ratelimit-limit', 'x-ratelimit-remaining', 'x-ratelimit-reset'],
      maxAge: 600,
    });
  }

  // Always registered, so a route's own `config.rateLimit` applies; RATE_LIMIT_MAX=0 turns off only the limit every route shares.
  const shared = options.rateLimit && options.rateLimit.max > 0 ? options.rateLimit : undefined;
  await app.register(fastifyRateLimit, {
    global: shared !== undefined,
    ...(shared ? { max: shared.max, timeWindow: shared.windowMs } : {}),
    errorResponseBuilder: (_request, context) =>
      new ApiError('rateLimited', `Rate limit exceeded: at most ${context.max} requests per client per window; retry in ${context.after}.`),
  });
}

