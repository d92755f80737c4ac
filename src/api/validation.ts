/**
 * Route schemas are zod schemas, the same library that validates job payloads, so one set
 * of messages reaches clients. Fastify runs them through this compiler (no Ajv), and
 * the OpenAPI document gets their JSON Schema through docs.ts.
 */
import type { FastifySchemaCompiler } from 'fastify';
import { z } from 'zod';
import { ApiError, compactIssues, describeIssues } from './errors.js';

const PART_NAMES: Record<string, string> = { querystring: 'query', params: 'path', body: 'body', headers: 'headers' };

export const zodValidatorCompiler: FastifySchemaCompiler<unknown> = ({ schema, httpPart }) => {
  if (!(schema instanceof z.ZodType)) throw new Error(`route schema for ${httpPart} is not a zod schema`);
  const where = PART_NAMES[httpPart ?? ''] ?? httpPart ?? 'request';
  return (data: unknown) => {
    const result = schema.safeParse(data);
    if (result.success) return { value: result.data };
    // An ApiError keeps its own code and message through Fastify's wrapping.
    if (httpPart === 'body' && data == null) return { error: new ApiError(400, 'INVALID', 'body: missing; send a JSON object') };
    return { error: new ApiError(400, 'INVALID', describeIssues(result.error, where), compactIssues(result.error.issues)) };
  };
};

export const toJsonSchema = (schema: z.ZodType, target: 'openapi-3.0' | 'draft-2020-12' = 'draft-2020-12') =>
  z.toJSONSchema(schema, { io: 'input', unrepresentable: 'any', target });

/** `?limit` and `?cursor` of every paged list. */
export const pageQuery = (defaultLimit: number) =>
  z.strictObject({
    limit: z.coerce.number().int().min(1).max(500).default(defaultLimit),
    cursor: z.string().min(1).max(200).optional(),
  });
