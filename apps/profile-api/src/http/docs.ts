import fastifySwagger from '@fastify/swagger';
import fastifySwaggerUi from '@fastify/swagger-ui';
import type { FastifyInstance } from 'fastify';
import { jsonSchemaTransform, jsonSchemaTransformObject } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { profileSchema } from '../domain/profile.ts';

export const DOCS_PREFIX = '/docs';

// A profile's personal fields are any JSON (`z.json()`, recursive): named in the registry, it becomes
// `#/components/schemas/JsonValue` instead of a reference to a generated name that no document holds.
const jsonValue = profileSchema.def.catchall;
if (jsonValue && !z.globalRegistry.has(jsonValue)) z.globalRegistry.add(jsonValue, { id: 'JsonValue', description: 'Any JSON value' });

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
      },
    },
    transform: jsonSchemaTransform,
    transformObject: jsonSchemaTransformObject,
  });
  await app.register(fastifySwaggerUi, { routePrefix: DOCS_PREFIX, uiConfig: { docExpansion: 'list', deepLinking: false } });
}
