/**
 * The OpenAPI document and Swagger UI at /docs. The document is generated from the
 * routes' zod schemas: requests from what validates them, responses from
 * `schema.response` (src/api/schemas.ts), and the body of POST /api/v1/jobs as a `oneOf`
 * of every public job type built from the job table, so a client generated from the
 * document (openapi-typescript, for one) is typed down to each job's payload.
 *
 * Response schemas document and do not serialize: Fastify would otherwise hand them to
 * fast-json-stringify, which drops every property a schema does not name. Answers are
 * written with JSON.stringify as before; the schemas are kept exact by type checks
 * (schemas.ts) and by a test that checks real answers against them.
 */
import swagger from '@fastify/swagger';
import swaggerUi from '@fastify/swagger-ui';
import type { FastifyInstance, FastifySchema, FastifySerializerCompiler } from 'fastify';
import { z } from 'zod';
import { assignScopes } from './auth.js';
import { COMPONENTS, documentationOf, requestJsonSchema } from './schemas.js';

const COMPONENT_PATH = '#/components/schemas/';

type Json = Record<string, unknown>;

/** zod -> OpenAPI 3.0 JSON Schema; named schemas become references to their component. */
function convert(schema: z.ZodType, io: 'input' | 'output'): Json {
  const out = io === 'input' ? requestJsonSchema(schema) : (z.toJSONSchema(schema, { io, unrepresentable: 'any', target: 'openapi-3.0' }) as Json);
  // Named schemas are collected in `definitions` (every one is also a component).
  delete out.definitions;
  return pointRefsAtComponents(out) as Json;
}

function pointRefsAtComponents(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(pointRefsAtComponents);
  if (value === null || typeof value !== 'object') return value;
  return Object.fromEntries(
    Object.entries(value).map(([k, v]) => [k, k === '$ref' && typeof v === 'string' ? v.replace('#/definitions/', COMPONENT_PATH) : pointRefsAtComponents(v)]),
  );
}

/** Every named schema, converted once per document. */
function components(): Json {
  const out: Json = {};
  for (const [id, { schema, io }] of COMPONENTS) {
    const converted = io === 'input' ? requestJsonSchema(schema) : (z.toJSONSchema(schema, { io, unrepresentable: 'any', target: 'openapi-3.0' }) as Json);
    // The component itself comes back as a reference to its own definition.
    const own = (converted.definitions as Json | undefined)?.[id] as Json | undefined;
    const body = { ...(own ?? converted) };
    delete body.definitions;
    delete body.$id;
    out[id] = pointRefsAtComponents(body);
  }
  return out;
}

/** A response entry: `{description, content: {type: {schema}}}` with zod schemas inside. */
function convertResponse(entry: unknown): unknown {
  if (entry instanceof z.ZodType) return convert(entry, 'output');
  const { description, content } = entry as { description?: string; content?: Record<string, { schema: unknown }> };
  if (!content) return entry;
  return {
    ...(description ? { description } : {}),
    content: Object.fromEntries(
      Object.entries(content).map(([type, media]) => [type, { ...media, schema: media.schema instanceof z.ZodType ? convert(media.schema, 'output') : media.schema }]),
    ),
  };
}

/** @fastify/swagger's `transform`: zod route schemas -> OpenAPI 3.0. */
export function swaggerTransform({ schema, url }: { schema: FastifySchema; url: string }): { schema: FastifySchema; url: string } {
  if (!schema) return { schema, url };
  const out: Json = {};
  for (const [key, value] of Object.entries(schema)) {
    if (key === 'response') {
      out.response = Object.fromEntries(Object.entries(value as Json).map(([status, entry]) => [status, convertResponse(entry)]));
    } else if (value instanceof z.ZodType) {
      out[key] = documentationOf(value) ?? convert(value, 'input');
    } else {
      out[key] = value;
    }
  }
  return { schema: out as FastifySchema, url };
}

/** Response schemas are zod schemas and only document (see the top of this file). */
const documentationOnlySerializer: FastifySerializerCompiler<unknown> = ({ schema, url, httpStatus }) => {
  if (!(schema instanceof z.ZodType)) throw new Error(`response schema ${httpStatus} of ${url} is not a zod schema`);
  return (data) => JSON.stringify(data);
};

export async function registerDocs(api: FastifyInstance, version: string): Promise<void> {
  // Set here, before any route: every plugin registered after inherits it.
  api.setSerializerCompiler(documentationOnlySerializer);
  await api.register(swagger, {
    openapi: {
      openapi: '3.0.3',
      info: {
        title: 'meshq',
        version,
        description:
          'Every write is a job: POST /api/v1/jobs validates and enqueues it; GET /api/v1/jobs/{id} reports its state. ' +
          'The request body of POST /api/v1/jobs is a `oneOf` of every public job type (discriminated by `type`); ' +
          'GET /api/v1/job-types also serves each payload JSON Schema at run time. ' +
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
    // Added last, untouched by @fastify/swagger's own conversion: already OpenAPI 3.0.
    transformObject: (document) => {
      if (!('openapiObject' in document)) return document.swaggerObject;
      const doc = document.openapiObject as { components?: { schemas?: Json } };
      doc.components = { ...doc.components, schemas: { ...doc.components?.schemas, ...components() } };
      return document.openapiObject;
    },
  });
  // Swagger UI's own routes (page, static files, the JSON and YAML document) are reads.
  await api.register(async (docs) => {
    assignScopes(docs, () => 'read');
    await docs.register(swaggerUi, { routePrefix: '/docs' });
  });
}
