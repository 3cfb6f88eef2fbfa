import fastifySwagger from '@fastify/swagger';
import fastifySwaggerUi from '@fastify/swagger-ui';
import type { FastifyInstance } from 'fastify';
import { jsonSchemaTransform, jsonSchemaTransformObject } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { profileSchema } from '../domain/profile.ts';
import { errorExample } from './errors.ts';

export const DOCS_PREFIX = '/docs';

// A profile's personal fields are any JSON (`z.json()`, recursive): named in the registry, it becomes
// `#/components/schemas/JsonValue` instead of a reference to a generated name that no document holds.
const jsonValue = profileSchema.def.catchall;
if (jsonValue && !z.globalRegistry.has(jsonValue))
  z.globalRegistry.add(jsonValue, { id: 'JsonValue', description: 'Any JSON value' });

/**
 * The OpenAPI document, generated from the routes' zod schemas (`GET /docs/json`, `/docs/yaml`), and
 * Swagger UI over it (`GET /docs`, assets shipped in the package: no build step, no CDN). Registered
 * before any route, so every route registered after it is in the document (`schema.hide` keeps one out).
 */
export async function registerDocs(app: FastifyInstance): Promise<void> {
  await app.register(fastifySwagger, {
    openapi: {
      openapi: '3.1.0',
      info: {
        title: 'redsource profile API',
        description:
          'The read model of the profile service: user profiles folded from Redis Streams. ' +
          'Every error body is `{statusCode, code, error, message}`.',
        version: '0.1.0',
        license: { name: 'UNLICENSED (a private package: no licence granted)' },
      },
      // Relative: the document describes whichever instance serves it (HOST, PORT, or behind a proxy).
      servers: [{ url: '/', description: 'the instance serving this document' }],
      // No route needs credentials (keep the service on an internal network; see the README's Security).
      security: [],
    },
    transform: (route) => describeOperation(jsonSchemaTransform(route), route.route.method),
    transformObject: (document) => withoutSchemaIds(jsonSchemaTransformObject(document)),
  });
  await app.register(fastifySwaggerUi, {
    routePrefix: DOCS_PREFIX,
    uiConfig: { docExpansion: 'list', deepLinking: false },
  });
}

/** Operation ids by route, for generated clients; a route not named here gets one from its method and URL. */
const OPERATION_IDS: Readonly<Record<string, string>> = {
  '/users/:id/profile': 'getProfile',
  '/healthz': 'getLiveness',
  '/readyz': 'getReadiness',
  '/metrics': 'getMetrics',
  '/dashboard': 'getDashboard',
  '/dashboard/status.json': 'getDashboardStatus',
  '/dashboard/dead-letters.json': 'getDashboardDeadLetters',
};

/** Any route answers this when the request is malformed before it runs (a header Node refuses, a URL that cannot be decoded). */
const MALFORMED = {
  type: 'object',
  description: 'Malformed request (RS_BAD_REQUEST): a header or URL the server cannot read.',
} as const;

type Described = ReturnType<typeof jsonSchemaTransform>;

/**
 * What the routes' own schemas leave out of the document: an operationId, the 400 every route can
 * answer, and a real error body as each error response's example.
 */
function describeOperation({ schema, url }: Described, method: string | string[]): Described {
  const verb = (Array.isArray(method) ? method[0] : method) ?? 'GET';
  const own = schema as Record<string, unknown>;
  const responses = { ...((own['response'] ?? {}) as Record<string, Record<string, unknown>>) };
  // Without a response schema of its own the route's 200 is still an answer the document must show.
  if (!Object.keys(responses).some((code) => code.startsWith('2'))) responses['200'] = successOf(url);
  const errorProperties = Object.keys(responses).find((code) => isErrorBody(responses[code]));
  if (!Object.keys(responses).some((code) => code.startsWith('4'))) {
    const shape = errorProperties ? responses[errorProperties] : undefined;
    responses['400'] = shape ? { ...stripExamples(shape), description: MALFORMED.description } : { ...MALFORMED };
  }
  for (const [code, body] of Object.entries(responses)) {
    if (isErrorBody(body)) responses[code] = { ...body, examples: [errorExample(Number(code))] };
  }
  return {
    url,
    schema: {
      ...own,
      operationId:
        typeof own['operationId'] === 'string' ? own['operationId'] : (OPERATION_IDS[url] ?? operationIdOf(verb, url)),
      response: responses,
    },
  };
}

/** A route's 200 where its schema declares none: what it sends, by media type. */
function successOf(url: string): Record<string, unknown> {
  const media = SUCCESS_MEDIA[url];
  return media
    ? { description: media.description, content: { [media.type]: { schema: { type: 'string' } } } }
    : { description: 'OK', type: 'object' };
}

const SUCCESS_MEDIA: Readonly<Record<string, { type: string; description: string }>> = {
  '/metrics': { type: 'text/plain; version=0.0.4', description: 'Prometheus text format.' },
  '/dashboard': { type: 'text/html', description: 'The dashboard page (its script polls /dashboard/status.json).' },
};

function isErrorBody(schema: Record<string, unknown> | undefined): boolean {
  const properties = schema?.['properties'];
  return typeof properties === 'object' && properties !== null && 'code' in properties && 'statusCode' in properties;
}

function stripExamples(schema: Record<string, unknown>): Record<string, unknown> {
  const { examples: _examples, ...rest } = schema;
  return rest;
}

/** `GET /a/:b/c.json` → `getABCJson`. */
function operationIdOf(method: string, url: string): string {
  const words = url.split(/[^A-Za-z0-9]+/).filter((w) => w.length > 0);
  return method.toLowerCase() + words.map((w) => w[0]?.toUpperCase() + w.slice(1)).join('');
}

/**
 * The components as plain OpenAPI schemas: the zod conversion leaves `$id: "#/components/schemas/X"` and
 * `$schema` in each, and a `$ref` inside one (JsonValue is recursive) would then resolve against that id.
 */
function withoutSchemaIds<T extends object>(document: T): T {
  const components = 'components' in document ? document.components : undefined;
  const schemas = (components as { schemas?: Record<string, Record<string, unknown>> } | undefined)?.schemas;
  if (!schemas) return document;
  const plain = Object.fromEntries(
    Object.entries(schemas).map(([name, { $id: _id, $schema: _schema, ...schema }]) => [name, schema]),
  );
  return { ...document, components: { ...(components as object), schemas: plain } };
}
