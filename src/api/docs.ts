/**
 * The OpenAPI document (generated from the routes' zod schemas) and Swagger UI at /docs.
 * Job payloads are described by GET /api/v1/job-types rather than inlined as one big
 * `oneOf`: the table is the single source, and clients can fetch it at run time.
 */
import swagger from '@fastify/swagger';
import swaggerUi from '@fastify/swagger-ui';
import type { FastifyInstance } from 'fastify';
import { assignScopes } from './auth.js';
import { swaggerTransform } from './validation.js';

export async function registerDocs(api: FastifyInstance, version: string): Promise<void> {
  await api.register(swagger, {
    openapi: {
      openapi: '3.0.3',
      info: {
        title: 'meshq',
        version,
        description:
          'Every write is a job: POST /api/v1/jobs validates and enqueues it; GET /api/v1/jobs/{id} reports its state. ' +
          'The payload JSON Schema of each job type is served by GET /api/v1/job-types. ' +
          'Errors answer {"error":{"code","message","details"?}}.',
      },
      components: {
        securitySchemes: {
          basic: { type: 'http', scheme: 'basic', description: 'The administrator' },
          bearer: { type: 'http', scheme: 'bearer', description: 'An API token (POST /api/v1/tokens)' },
        },
      },
      security: [{ basic: [] }, { bearer: [] }],
    },
    transform: swaggerTransform,
  });
  // Swagger UI's own routes (page, static files, the JSON and YAML document) are reads.
  await api.register(async (docs) => {
    assignScopes(docs, () => 'read');
    await docs.register(swaggerUi, { routePrefix: '/docs' });
  });
}
