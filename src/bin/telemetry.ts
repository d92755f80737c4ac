/**
 * OpenTelemetry tracing, on only when OTEL_EXPORTER_OTLP_ENDPOINT is set: an HTTP request,
 * the job it enqueued, that job's run in a worker and the SQL the run sends share one trace.
 *
 * Why it starts here, and this way:
 * - Instrumentations patch modules as they are loaded (pg, ioredis, node:http), so they
 *   must be in place before those modules are imported. Every entry point already loads
 *   the rest of meshq with import() after its Node.js check (node-guard.ts); it calls
 *   prepareProcess between the two. The commands stay `node dist/bin/<role>.js`, with no
 *   `--import` flag that a deployment could forget.
 * - meshq is ESM: its imports of pg, ioredis and node:http(s) are intercepted by
 *   import-in-the-middle's synchronous hooks (module.registerHooks, on the calling thread:
 *   the worker thread of `npm start` registers its own), for those modules only; the
 *   CommonJS requires inside Fastify are caught by require-in-the-middle, which the
 *   instrumentations bring.
 * - Unset, nothing of OpenTelemetry is loaded (every import of it below is dynamic), and
 *   BullMQ gets no telemetry option: it then calls a job's processor directly.
 * - The context travels from the request into the job in BullMQ's own job options
 *   (its telemetry metadata, written by bullmq-otel), not in the job's data: the signed
 *   envelope (src/jobs/envelope.ts) is untouched.
 * - Spans carry no secret and no business data: HTTP spans record no header and no body;
 *   Redis spans name the command only (its arguments are keys and job data); PostgreSQL
 *   spans record the statement text with its string literals replaced by `?` (MikroORM
 *   writes values into the text, and a closing write carries its rows as literals:
 *   hashes, sealed keys, names) and never bound parameter values. SQLite statements
 *   (better-sqlite3) have no maintained instrumentation and are not traced: the job's
 *   span covers them.
 * - Health probes and metrics scrapes are not traced: they would bury the requests.
 */
import type { IncomingMessage } from 'node:http';
import type { Telemetry } from 'bullmq';
import type { Sampler } from '@opentelemetry/sdk-trace';
import { loadConfig, loadDotEnv, type Config } from '../config.js';

export interface Tracing {
  /** BullMQ's `telemetry` option, for every Queue and Worker of this thread. */
  readonly jobs: Telemetry;
  /** Sends the spans still buffered, then stops tracing. */
  shutdown(): Promise<void>;
}

export interface PreparedProcess {
  /** The validated environment; absent when it is invalid (runRole then reports why). */
  readonly config?: Config;
  readonly tracing?: Tracing;
}

/** The process's role as a tracing service name, when OTEL_SERVICE_NAME does not give one. */
export type TracedRole = 'api' | 'worker';

/**
 * Loads the environment once and, when tracing is configured, starts it. Call it before
 * importing anything that talks HTTP, Redis or PostgreSQL.
 */
export async function prepareProcess(role: TracedRole): Promise<PreparedProcess> {
  loadDotEnv();
  let config: Config;
  try {
    config = loadConfig();
  } catch {
    // runRole loads it again and prints the one message listing every bad variable.
    return {};
  }
  if (!config.tracing) return { config };
  return { config, tracing: await startTracing(config.tracing, config.tracing.serviceName ?? `meshq-${role}`) };
}

/** Paths answered to probes and scrapers. */
const UNTRACED_PATHS = new Set(['/healthz', '/readyz', '/metrics']);

const untraced = (req: IncomingMessage): boolean => UNTRACED_PATHS.has((req.url ?? '').split('?', 1)[0]!);

/**
 * A statement's text without its string literals: `'...'` (quotes doubled inside, as
 * PostgreSQL's escapeLiteral writes them, with or without the `E` prefix) becomes `?`.
 * meshq's statements quote identifiers without apostrophes, so quotes pair up.
 */
export const withoutStringLiterals = (sql: string): string => sql.replace(/(?:\bE)?'(?:[^']|'')*'/g, '?');

/** One line of a diagnostic's part: an error (or one OpenTelemetry stringified to JSON) by its message alone. */
function errorText(part: unknown): string {
  if (part instanceof Error) return part.message;
  if (typeof part !== 'string') return '';
  try {
    const parsed: unknown = JSON.parse(part);
    if (parsed && typeof parsed === 'object' && typeof (parsed as { message?: unknown }).message === 'string') return (parsed as { message: string }).message;
  } catch {
    // Not JSON: the text itself.
  }
  return part.replace(/\s+/g, ' ');
}

async function startTracing(settings: NonNullable<Config['tracing']>, serviceName: string): Promise<Tracing> {
  // The hooks first: nothing below may load a module they are meant to intercept.
  const { register } = await import('import-in-the-middle/register-hooks.mjs');
  register({ include: ['pg', 'pg-pool', 'ioredis', 'http', 'https', 'node:http', 'node:https'] });

  const [api, { AsyncLocalStorageContextManager }, { W3CTraceContextPropagator }, { resourceFromAttributes }, sdk, { ATTR_SERVICE_NAME }, { OTLPTraceExporter }] =
    await Promise.all([
      import('@opentelemetry/api'),
      import('@opentelemetry/context-async-hooks'),
      import('@opentelemetry/core'),
      import('@opentelemetry/resources'),
      import('@opentelemetry/sdk-trace'),
      import('@opentelemetry/semantic-conventions'),
      import('@opentelemetry/exporter-trace-otlp-http'),
    ]);
  const [{ registerInstrumentations }, { HttpInstrumentation }, { PgInstrumentation }, { IORedisInstrumentation }, fastifyOtel, { BullMQOtel }] =
    await Promise.all([
      import('@opentelemetry/instrumentation'),
      import('@opentelemetry/instrumentation-http'),
      import('@opentelemetry/instrumentation-pg'),
      import('@opentelemetry/instrumentation-ioredis'),
      import('@fastify/otel'),
      import('bullmq-otel'),
    ]);

  // OpenTelemetry reports through its own diagnostic logger, silent unless one is set: a
  // collector that is down or refuses would go unnoticed. Warnings and errors get one line.
  const say = (message: string, ...args: unknown[]) => {
    const text = [message, ...args].map(errorText).filter(Boolean).join(' ');
    process.stderr.write(`meshq ${serviceName}: tracing: ${text}\n`);
  };
  const quiet = () => undefined;
  api.diag.setLogger({ error: say, warn: say, info: quiet, debug: quiet, verbose: quiet }, api.DiagLogLevel.WARN);

  const exporter = new OTLPTraceExporter({ url: `${settings.endpoint.replace(/\/+$/, '')}/v1/traces` });
  // A trace starts at a request, or at a job added or run with none around it. BullMQ's
  // own upkeep (the stalled-job check of every queue, on a timer; closing) would start an
  // internal trace each time: those roots, and so their Redis calls, are not recorded.
  const rootSampler: Sampler = {
    shouldSample: (_ctx, _traceId, _name, kind) => ({
      decision: kind === api.SpanKind.INTERNAL ? sdk.SamplingDecision.NOT_RECORD : sdk.SamplingDecision.RECORD_AND_SAMPLED,
    }),
    toString: () => 'meshq: no internal roots',
  };
  const provider = new sdk.TracerProvider({
    resource: resourceFromAttributes({ [ATTR_SERVICE_NAME]: serviceName }),
    sampler: new sdk.ParentBasedSampler({ root: rootSampler }),
    spanProcessors: [new sdk.BatchSpanProcessor({ exporter })],
  });
  api.context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable());
  api.propagation.setGlobalPropagator(new W3CTraceContextPropagator());
  api.trace.setGlobalTracerProvider(provider);

  const unregister = registerInstrumentations({
    tracerProvider: provider,
    instrumentations: [
      new HttpInstrumentation({
        ignoreIncomingRequestHook: untraced,
        // An outgoing request with no request or job around it (none is expected) is noise.
        requireParentforOutgoingSpans: true,
      }),
      // Route names on the request's span, and the handler's own span; one span per
      // lifecycle hook (authentication, rate limit, helmet, ...) would outnumber the rest.
      new fastifyOtel.FastifyOtelInstrumentation({ registerOnInitialization: true, instrumentHooks: false, ignorePaths: (route) => UNTRACED_PATHS.has(route.url) }),
      new PgInstrumentation({
        requireParentSpan: true,
        enhancedDatabaseReporting: false,
        requestHook: (span, { query }) => span.setAttribute('db.query.text', withoutStringLiterals(query.text)),
      }),
      new IORedisInstrumentation({ requireParentSpan: true, dbStatementSerializer: (command) => command }),
    ],
  });

  return {
    jobs: new BullMQOtel({ tracerName: 'meshq', enableMetrics: false }),
    async shutdown() {
      unregister();
      await provider.shutdown();
      api.trace.disable();
      api.context.disable();
      api.propagation.disable();
      api.diag.disable();
    },
  };
}
