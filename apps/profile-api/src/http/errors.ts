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
  readonly code: ApiErrorCode;
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

/** Every code the API answers with: what a client may switch on. */
export const errorCodes = Object.values(apiErrors).map((e) => e.code) as [ApiErrorCode, ...ApiErrorCode[]];
export type ApiErrorCode = (typeof apiErrors)[ApiErrorKind]['code'];

/** The error body as a response schema (OpenAPI document and serializer). */
export const errorSchema = z.object({
  statusCode: z.number().int().min(400).max(599).describe('The HTTP status, repeated.'),
  code: z.enum(errorCodes).describe('Stable code to switch on (any other 4xx, e.g. 415, is RS_BAD_REQUEST).'),
  error: z.string().describe("The status's reason phrase."),
  message: z.string().describe('What went wrong and what to do, for a person.'),
});

/** A real error body for a status, as the OpenAPI document shows it (the catalogue's entry, or a client error). */
export function errorExample(statusCode: number): ErrorBody {
  const kind = (Object.keys(apiErrors) as ApiErrorKind[]).find((k) => apiErrors[k].statusCode === statusCode);
  return kind
    ? errorBody(kind, exampleMessages[kind])
    : clientErrorBody(statusCode, 'Malformed request: invalid header.');
}

const exampleMessages: Record<ApiErrorKind, string> = {
  badRequest: 'id must be 1-64 characters from A-Z, a-z, 0-9, _ and - (e.g. /users/42/profile)',
  notFound: "No profile for user '42'.",
  rateLimited: 'Rate limit exceeded: at most 100 requests per client per window; retry in 1 second.',
  unavailable: 'Redis is not available right now; retry shortly.',
  notCaughtUp:
    'The snapshots have not applied user_friends up to 1700000000000-0 within 2000 ms (applied up to 1699999999000-0); retry, or ask with a longer wait (at most 10000).',
  internal: 'Unexpected error; see the service log.',
};

/** `errorSchema` with the description OpenAPI shows for one status. */
export const errorResponse = (description: string) => errorSchema.describe(description);

/** Answers every route may give besides its own: rate limited, shutting down or Redis away, a bug. */
export const commonErrorResponses = {
  429: errorResponse('Too many requests from this client (RATE_LIMIT_MAX per RATE_LIMIT_WINDOW_MS); see Retry-After.'),
  500: errorResponse('Unexpected error (RS_INTERNAL); see the service log.'),
  503: errorResponse('Redis is not reachable (RS_UNAVAILABLE), or the service is shutting down.'),
} as const;
