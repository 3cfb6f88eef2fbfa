import { STATUS_CODES } from 'node:http';
import { z } from 'zod';

/** The API's error catalogue: stable codes, one JSON body shape `{ statusCode, code, error, message }`. */
export const apiErrors = {
  badRequest: { statusCode: 400, code: 'RS_BAD_REQUEST', error: 'Bad Request' },
  notFound: { statusCode: 404, code: 'RS_NOT_FOUND', error: 'Not Found' },
  rateLimited: { statusCode: 429, code: 'RS_RATE_LIMITED', error: 'Too Many Requests' },
  unavailable: { statusCode: 503, code: 'RS_UNAVAILABLE', error: 'Service Unavailable' },
  notCaughtUp: { statusCode: 504, code: 'RS_NOT_CAUGHT_UP', error: 'Gateway Timeout' },
  internal: { statusCode: 500, code: 'RS_INTERNAL', error: 'Internal Server Error' },
} as const;

export type ApiErrorKind = keyof typeof apiErrors;

export interface ErrorBody {
  readonly statusCode: number;
  readonly code: string;
  readonly error: string;
  readonly message: string;
}

export function errorBody(kind: ApiErrorKind, message: string): ErrorBody {
  return { ...apiErrors[kind], message };
}

/** The body of any other 4xx (e.g. 415 from Fastify): the status's own reason, the catalogue's client-error code. */
export function clientErrorBody(statusCode: number, message: string): ErrorBody {
  return { statusCode, code: apiErrors.badRequest.code, error: STATUS_CODES[statusCode] ?? 'Client Error', message };
}

/** Thrown by plugins and handlers to answer with one of the catalogue's errors. */
export class ApiError extends Error {
  readonly statusCode: number;
  readonly body: ErrorBody;
  constructor(kind: ApiErrorKind, message: string) {
    super(message);
    this.name = 'ApiError';
    this.body = errorBody(kind, message);
    this.statusCode = this.body.statusCode;
  }
}

/** The error body as a response schema (OpenAPI document and serializer). */
export const errorSchema = z.object({
  statusCode: z.number().int(),
  code: z.string(),
  error: z.string(),
  message: z.string(),
});

/** `errorSchema` with the description OpenAPI shows for one status. */
export const errorResponse = (description: string) => errorSchema.describe(description);

/** Answers every route may give besides its own: rate limited, shutting down or Redis away, a bug. */
export const commonErrorResponses = {
  429: errorResponse('Too many requests from this client (RATE_LIMIT_MAX per RATE_LIMIT_WINDOW_MS); see Retry-After.'),
  500: errorResponse('Unexpected error (RS_INTERNAL); see the service log.'),
  503: errorResponse('Redis is not reachable (RS_UNAVAILABLE), or the service is shutting down.'),
} as const;
