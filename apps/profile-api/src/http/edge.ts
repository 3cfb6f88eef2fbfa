import { randomUUID } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import type { Socket } from 'node:net';
import fastifyCors from '@fastify/cors';
import fastifyRateLimit from '@fastify/rate-limit';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { AppConfig } from '../config.ts';
import { ApiError, clientErrorBody, errorBody } from './errors.ts';

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

/** What Node's HTTP parser reports, by its error code: status and message of the answer. */
const PARSER_ERRORS: Readonly<Record<string, readonly [number, string]>> = {
  HPE_HEADER_OVERFLOW: [431, 'The request headers are larger than the server accepts (16 KiB).'],
  ERR_HTTP_REQUEST_TIMEOUT: [408, 'The request was not received in time.'],
  ERR_HTTP_HEADERS_TIMEOUT: [408, 'The request headers were not received in time.'],
  HPE_INVALID_METHOD: [400, 'Malformed request: unknown HTTP method.'],
  HPE_INVALID_HEADER_TOKEN: [400, 'Malformed request: invalid header.'],
  HPE_INVALID_TRANSFER_ENCODING: [400, 'Malformed request: invalid Transfer-Encoding.'],
  HPE_UNEXPECTED_CONTENT_LENGTH: [400, 'Malformed request: conflicting Content-Length and Transfer-Encoding.'],
};

/**
 * Fastify's `clientErrorHandler`: a request Node's HTTP parser refuses (no route, no hook runs) is
 * answered with the API's error body, then the connection is closed (the stream cannot be trusted).
 */
export function clientErrorHandler(this: FastifyInstance, error: Error & { code?: string }, socket: Socket): void {
  if (error.code === 'ECONNRESET' || socket.destroyed) return;
  const [status, message] = PARSER_ERRORS[error.code ?? ''] ?? [
    400,
    `Malformed request (${error.code ?? 'unparseable'}).`,
  ];
  this.log.debug({ err: { code: error.code, message: error.message } }, 'malformed request refused');
  if (socket.writable) {
    const body = JSON.stringify(clientErrorBody(status, message));
    socket.write(
      `HTTP/1.1 ${status} ${clientErrorBody(status, message).error}\r\n` +
        `Content-Type: application/json; charset=utf-8\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
    );
  }
  socket.destroy();
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
export function edgeOptions(
  config: Pick<AppConfig, 'RATE_LIMIT_MAX' | 'RATE_LIMIT_WINDOW_MS' | 'CORS_ORIGIN'>,
): EdgeOptions {
  return { rateLimit: { max: config.RATE_LIMIT_MAX, windowMs: config.RATE_LIMIT_WINDOW_MS }, cors: config.CORS_ORIGIN };
}

/**
 * What every route gets, registered before any route: the request id echoed, a 503 in the API's
 * error shape for requests arriving during shutdown (in-flight ones finish), CORS, the rate limit
 * (on every route that does not opt out, unknown URLs included), the 404 answer.
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
      exposedHeaders: [
        'etag',
        REQUEST_ID_HEADER,
        'retry-after',
        'x-ratelimit-limit',
        'x-ratelimit-remaining',
        'x-ratelimit-reset',
      ],
      maxAge: 600,
    });
  }

  // Always registered, so a route's own `config.rateLimit` applies; RATE_LIMIT_MAX=0 turns off only the limit every route shares.
  const shared = options.rateLimit && options.rateLimit.max > 0 ? options.rateLimit : undefined;
  await app.register(fastifyRateLimit, {
    global: shared !== undefined,
    ...(shared ? { max: shared.max, timeWindow: shared.windowMs } : {}),
    errorResponseBuilder: (_request, context) =>
      new ApiError(
        'rateLimited',
        `Rate limit exceeded: at most ${context.max} requests per client per window; retry in ${context.after}.`,
      ),
  });
  // The plugin hooks routes only; an unknown URL counts against the same budget through this preHandler.
  app.setNotFoundHandler(shared ? { preHandler: app.rateLimit() } : {}, (request, reply) =>
    reply.code(404).send(errorBody('notFound', `No route ${request.method} ${request.url}`)),
  );
}
