/**
 * The one place where a failure becomes an HTTP answer: `{"error":{"code","message","details"?}}`.
 * Domain errors map through httpStatusOf; client mistakes that Fastify or zod detect
 * become 400 INVALID with a message naming where the problem is (`body: ...`,
 * `query.limit: ...`); everything unexpected is a 500 whose body says nothing about
 * the inside (the log has the details, joined by the request id).
 */
import type { FastifyError, FastifyReply, FastifyRequest } from 'fastify';
import { z } from 'zod';
import { DomainError, httpStatusOf } from '../domain/errors.js';

export interface ErrorBody {
  error: { code: string; message: string; details?: unknown };
}

export class ApiError extends Error {
  constructor(
    readonly statusCode: number,
    readonly code: string,
    message: string,
    readonly details?: unknown,
  ) {
    super(message);
    this.name = 'ApiError';
  }
}

export const errorBody = (code: string, message: string, details?: unknown): ErrorBody => ({
  error: details === undefined ? { code, message } : { code, message, details },
});

/** "name: Too small...; dns.0: Invalid IPv4" prefixed by where the value came from. */
export function describeIssues(error: z.ZodError, where?: string): string {
  return error.issues
    .map((i) => {
      const path = [where, ...i.path.map(String)].filter(Boolean).join('.');
      return `${path || '(value)'}: ${i.message}`;
    })
    .join('; ');
}

/** Issues as clients need them: where and what, without zod's internals (regexes, etc.). */
export const compactIssues = (issues: readonly z.core.$ZodIssue[]) =>
  issues.map((i) => ({ path: i.path.map(String).join('.'), code: i.code, message: i.message }));

/** Client errors Fastify raises itself, by code. */
const FASTIFY_CLIENT_ERRORS: Record<string, { status: number; code: string; message?: string }> = {
  FST_ERR_CTP_BODY_TOO_LARGE: { status: 413, code: 'PAYLOAD_TOO_LARGE' },
  FST_ERR_CTP_INVALID_MEDIA_TYPE: { status: 415, code: 'UNSUPPORTED_MEDIA_TYPE', message: 'unsupported content type: send application/json' },
  FST_ERR_CTP_EMPTY_JSON_BODY: { status: 400, code: 'INVALID', message: "body: empty, but content-type is application/json" },
  FST_ERR_CTP_INVALID_JSON_BODY: { status: 400, code: 'INVALID', message: 'body: not valid JSON' },
  FST_ERR_CTP_INVALID_CONTENT_LENGTH: { status: 400, code: 'INVALID' },
};

const CODE_OF_STATUS: Record<number, string> = {
  400: 'INVALID',
  401: 'UNAUTHORIZED',
  403: 'FORBIDDEN',
  404: 'NOT_FOUND',
  405: 'METHOD_NOT_ALLOWED',
  406: 'NOT_ACCEPTABLE',
  409: 'CONFLICT',
  413: 'PAYLOAD_TOO_LARGE',
  415: 'UNSUPPORTED_MEDIA_TYPE',
  429: 'TOO_MANY_REQUESTS',
};

export interface MappedError {
  status: number;
  body: ErrorBody;
  /** True when the cause is ours, not the client's: log it with its stack. */
  internal: boolean;
}

/** Seconds a client is told to wait (Retry-After) before retrying a 503. */
export const RETRY_AFTER_SECONDS = 5;

/** A service meshq needs (database, Redis) did not answer in time: a 503, never a 500. */
export class UnavailableError extends ApiError {
  constructor(message: string) {
    super(503, 'UNAVAILABLE', message);
    this.name = 'UnavailableError';
  }
}

/**
 * Waits for `work` at most `ms`; past it rejects with a 503 naming `what`. The work is
 * not cancelled (a database read simply finishes later), so only read-only work may be
 * bounded this way: the caller must not act on it after the deadline.
 */
export async function withDeadline<T>(work: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new UnavailableError(`${what} did not answer within ${ms} ms; nothing was submitted: retry later`)), ms);
  });
  try {
    return await Promise.race([work, deadline]);
  } finally {
    clearTimeout(timer);
  }
}

const PG_RETRYABLE_CLASSES = ['08', '53', '57', '58'];
const PG_RETRYABLE_CODES = new Set(['40001', '40P01', '55P03']);
const NET_CODES = new Set(['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EPIPE', 'EHOSTUNREACH', 'ENETUNREACH', 'ENOTFOUND', 'EAI_AGAIN']);
const RETRYABLE_MESSAGES = [
  /enableOfflineQueue options is false/, // ioredis, Redis down (fail-fast producer)
  /Command timed out/, // ioredis commandTimeout
  /Connection is closed/, // ioredis
  /Reached the max retries per request limit/, // ioredis
  /^(LOADING|BUSY|MASTERDOWN|TRYAGAIN|CLUSTERDOWN) /, // Redis replies meaning "not now"
  /^(READONLY|NOREPLICAS) /, // a Redis primary being failed over (Sentinel): demoted, or cut off from its replicas
  /Connection terminated/, // pg
  /timeout exceeded when trying to connect/, // pg pool
  /Client has encountered a connection error/, // pg
  /the database system is (starting up|shutting down|in recovery mode)/, // PostgreSQL
];

/**
 * Whether `err` (or an error it wraps) says a service is down or overloaded rather than
 * that the request is wrong: PostgreSQL connection and resource classes, serialization
 * failures, network errors, Redis errors of a fail-fast connection, SQLite's busy file.
 */
export function isUnavailable(err: unknown): boolean {
  for (let e = err as { code?: unknown; name?: unknown; message?: unknown; cause?: unknown } | undefined, depth = 0; e && depth < 5; e = e.cause as typeof e, depth++) {
    const code = typeof e.code === 'string' ? e.code : '';
    if (code.length === 5 && (PG_RETRYABLE_CLASSES.includes(code.slice(0, 2)) || PG_RETRYABLE_CODES.has(code))) return true;
    if (NET_CODES.has(code) || code === 'SQLITE_BUSY' || code === 'SQLITE_LOCKED') return true;
    const name = typeof e.name === 'string' ? e.name : '';
    if (name === 'MaxRetriesPerRequestError' || name === 'RedisUnavailableError' || name === 'ReplicationUnconfirmedError' || name === 'ConnectionException') return true;
    if (typeof e.message === 'string' && RETRYABLE_MESSAGES.some((re) => re.test(e!.message as string))) return true;
  }
  return false;
}

export function mapError(err: unknown): MappedError {
  if (err instanceof ApiError) {
    return { status: err.statusCode, body: errorBody(err.code, err.message, err.details), internal: false };
  }
  if (err instanceof DomainError) {
    return { status: httpStatusOf(err.code), body: errorBody(err.code, err.message, err.details), internal: false };
  }
  if (err instanceof z.ZodError) {
    return { status: 400, body: errorBody('INVALID', describeIssues(err), compactIssues(err.issues)), internal: false };
  }
  const fe = err as Partial<FastifyError> & { validationContext?: string };
  if (fe.code === 'FST_ERR_VALIDATION') {
    return { status: 400, body: errorBody('INVALID', `${fe.validationContext ?? 'request'}: ${fe.message}`), internal: false };
  }
  if (fe.code && FASTIFY_CLIENT_ERRORS[fe.code]) {
    const known = FASTIFY_CLIENT_ERRORS[fe.code]!;
    return { status: known.status, body: errorBody(known.code, known.message ?? lowerFirst(fe.message ?? '')), internal: false };
  }
  // Other client errors Fastify raises (bad URL, unsupported method, ...) carry a 4xx
  // status and a message meant for the client.
  if (typeof fe.statusCode === 'number' && fe.statusCode >= 400 && fe.statusCode < 500 && fe.code?.startsWith('FST_')) {
    return { status: fe.statusCode, body: errorBody(CODE_OF_STATUS[fe.statusCode] ?? 'INVALID', fe.message ?? 'bad request'), internal: false };
  }
  if (isUnavailable(err)) {
    return {
      status: 503,
      body: errorBody('UNAVAILABLE', 'the database or Redis is not answering; retry later (Retry-After)'),
      internal: false,
    };
  }
  return { status: 500, body: errorBody('INTERNAL', 'internal error; the server log has the details'), internal: true };
}

const lowerFirst = (s: string) => s.charAt(0).toLowerCase() + s.slice(1);

export function errorHandler(err: unknown, request: FastifyRequest, reply: FastifyReply): FastifyReply {
  const mapped = mapError(err);
  // Fastify's own refusal names the route's body limit; other 413s (an upload over its
  // file limit) carry their own message, which names theirs.
  if ((err as { code?: unknown } | null)?.code === 'FST_ERR_CTP_BODY_TOO_LARGE' && request.routeOptions.bodyLimit) {
    mapped.body.error.message = `request body is too large: the limit is ${request.routeOptions.bodyLimit} bytes`;
  }
  if (mapped.internal) {
    request.log.error({ err }, 'request failed');
    mapped.body.error.details = { requestId: request.id };
  } else if (mapped.status === 503) {
    // An outage: the cause (which service, which error) is for the operator.
    request.log.warn({ err, status: 503 }, mapped.body.error.message);
  } else {
    request.log.info({ status: mapped.status, code: mapped.body.error.code }, mapped.body.error.message);
  }
  if (mapped.status === 401) void reply.header('www-authenticate', 'Basic realm="meshq"');
  if (mapped.status === 503) void reply.header('retry-after', String(RETRY_AFTER_SECONDS));
  return reply.status(mapped.status).type('application/json; charset=utf-8').send(mapped.body);
}

export function notFoundHandler(request: FastifyRequest, reply: FastifyReply): FastifyReply {
  return reply.status(404).send(errorBody('NOT_FOUND', `no route ${request.method} ${request.url.split('?')[0]}`));
}
