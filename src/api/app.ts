/**
 * The HTTP API: validates and enqueues writes, serves reads, Bull Board, health and
 * metrics. It runs no jobs. `buildApi` does not listen, so tests drive it with inject().
 */
import { readFileSync } from 'node:fs';
import Fastify, { type FastifyBaseLogger, type FastifyInstance } from 'fastify';
import type { AppContext } from './context.js';
import { REDACTED_PATHS } from '../logger.js';
import { DEFAULT_AUTH_LIMITS, registerAuth, type AuthLimits, type RegisteredRoute } from './auth.js';
import { registerCrossSiteGuard, registerSecurityHeaders } from './browsers.js';
import { createLoginThrottle } from './login-throttle.js';
import { registerBullBoard } from './bull-board.js';
import { registerDocs } from './docs.js';
import { ApiError, errorHandler, notFoundHandler } from './errors.js';
import { ApiMetrics } from './metrics.js';
import { eventRoutes } from './routes/events.js';
import { brokerRoutes } from './routes/broker.js';
import { healthRoutes } from './routes/health.js';
import { jobRoutes } from './routes/jobs.js';
import { metricsRoutes } from './routes/metrics.js';
import { readRoutes } from './routes/reads.js';
import { secretRoutes } from './routes/secrets.js';
import { snapshotRoutes } from './routes/snapshots.js';
import { wireguardRoutes } from './routes/wireguard.js';
import { zodValidatorCompiler } from './validation.js';

export interface ApiOptions {
  /** Largest accepted request body in bytes (default 1 MiB). */
  bodyLimit?: number;
  /** Failed-login throttling and concurrent password checks (defaults: DEFAULT_AUTH_LIMITS). */
  authLimits?: Partial<AuthLimits>;
  /** The workers' metrics (Prometheus text) when they run in this process: /metrics serves them too, once. */
  workerMetrics?: () => Promise<string>;
  /** How long a quiet event stream waits before a keep-alive comment (default 15 s). */
  eventKeepAliveMs?: number;
}

declare module 'fastify' {
  interface FastifyInstance {
    /** Every route with the scope it declared (the authorization test walks them). */
    meshqRoutes(): RegisteredRoute[];
  }
}

export const DEFAULT_BODY_LIMIT = 1024 * 1024;
export const API_PREFIX = '/api/v1';

const VERSION = (JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }).version;

export async function buildApi(app: AppContext, opts: ApiOptions = {}): Promise<FastifyInstance> {
  const api = Fastify({
    loggerInstance: app.log.child(
      { component: 'api' },
      { redact: { paths: [...REDACTED_PATHS, 'req.headers.cookie', 'res.headers["set-cookie"]'], censor: '[redacted]' } },
    ) as FastifyBaseLogger,
    bodyLimit: opts.bodyLimit ?? DEFAULT_BODY_LIMIT,
    // Our ids are UUIDv7 and job ids `idem-<hex>`; nothing needs longer path segments.
    routerOptions: { maxParamLength: 200 },
  });

  api.setValidatorCompiler(zodValidatorCompiler);
  api.setErrorHandler(errorHandler);
  api.setNotFoundHandler(notFoundHandler);
  installJsonParser(api);

  // Order matters: headers first (every answer carries them, refusals too), then the
  // cross-site refusal, then authentication (no password is checked for a refused request).
  registerSecurityHeaders(api);
  registerCrossSiteGuard(api);
  const limits = { ...DEFAULT_AUTH_LIMITS, ...opts.authLimits };
  const { routes } = registerAuth(api, app, await createLoginThrottle(api, limits), limits);
  api.decorate('meshqRoutes', routes);
  const metrics = new ApiMetrics(app, { workers: opts.workerMetrics });
  metrics.install(api);

  await registerDocs(api, VERSION);
  await api.register(healthRoutes, { app });
  await api.register(metricsRoutes, { metrics });
  await api.register(jobRoutes, { app, prefix: API_PREFIX });
  await api.register(eventRoutes, { app, prefix: API_PREFIX, keepAliveMs: opts.eventKeepAliveMs });
  await api.register(readRoutes, { app, prefix: API_PREFIX });
  await api.register(secretRoutes, { app, prefix: API_PREFIX });
  await api.register(brokerRoutes, { app, prefix: API_PREFIX });
  await api.register(snapshotRoutes, { app, prefix: API_PREFIX });
  await api.register(wireguardRoutes, { app, prefix: API_PREFIX });
  await registerBullBoard(api, app.queues);

  await api.ready();
  return api;
}

/**
 * Fastify's own JSON parser answers "Body is not valid JSON" without saying where; a
 * client fixing a request wants the parser's reason. `__proto__` keys are dropped, as
 * Fastify's secure parser would (nothing downstream should ever see one).
 */
function installJsonParser(api: FastifyInstance): void {
  api.addContentTypeParser('application/json', { parseAs: 'string' }, (_req, body, done) => {
    const text = body as string;
    if (text.trim() === '') return done(null, undefined);
    try {
      // A reviver makes JSON.parse call back for every value: only a text that could name
      // `__proto__` (literally, or through a \u escape) needs one.
      const risky = text.includes('__proto__') || text.includes('\\u');
      done(null, risky ? JSON.parse(text, (key, value: unknown) => (key === '__proto__' ? undefined : value)) : JSON.parse(text));
    } catch (err) {
      done(new ApiError(400, 'INVALID', `body: ${(err as Error).message}`), undefined);
    }
  });
}
