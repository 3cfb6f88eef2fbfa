/** The API's error catalogue: stable codes, one JSON body shape `{ statusCode, code, error, message }`. */
export const apiErrors = {
  badRequest: { statusCode: 400, code: 'RS_BAD_REQUEST', error: 'Bad Request' },
  notFound: { statusCode: 404, code: 'RS_NOT_FOUND', error: 'Not Found' },
  unavailable: { statusCode: 503, code: 'RS_UNAVAILABLE', error: 'Service Unavailable' },
  internal: { statusCode: 500, code: 'RS_INTERNAL', error: 'Internal Server Error' },
} as const;

export type ApiErrorKind = keyof typeof apiErrors;

export function errorBody(kind: ApiErrorKind, message: string) {
  return { ...apiErrors[kind], message };
}
