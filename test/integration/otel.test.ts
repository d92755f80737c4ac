/**
 * OpenTelemetry traces, end to end: the API and a worker run as real processes (their
 * entry points, as `npm run api` and `npm run worker` start them; and `npm start`'s one
 * process, whose workers run in a thread with a tracer of their own) with
 * OTEL_EXPORTER_OTLP_ENDPOINT pointing at a collector double in this test, which takes
 * OTLP/HTTP JSON on POST /v1/traces.
 *
 * - One trace links the HTTP request that submitted a job, the job's run in the worker
 *   and (PostgreSQL) the SQL that run sent.
 * - No secret reaches a span: not the server key, the administrator's password or its
 *   Basic header, nor an API token the API created.
 * - Both processes send what they still hold when they stop on SIGTERM.
 * - Unset, no OpenTelemetry SDK, instrumentation or loader hook is loaded at all.
 */
import { createServer, type Server } from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ConfigError, loadConfig } from '../../src/config.js';
import { withoutStringLiterals } from '../../src/bin/telemetry.js';
import { createTestDatabase, DIALECTS, TEST_SECRET_KEY, type TestDatabase } from '../support/db.js';
import { cleanEnv, freePort, killAll, root, runProcess, startProcess, tsEntry, waitFor, type Started } from '../support/processes.js';
import { deletePrefix } from '../support/redis.js';

const ADMIN_PASSWORD = 'otel-admin-password-1';
const basic = 'Basic ' + Buffer.from(`admin:${ADMIN_PASSWORD}`).toString('base64');
const DB_PASSWORD = 'otel-db-password-1';

/** OTLP JSON as the exporter sends it (only the fields this test reads). */
interface OtlpValue {
  stringValue?: string;
  intValue?: string | number;
  boolValue?: boolean;
  doubleValue?: number;
  arrayValue?: { values?: OtlpValue[] };
}
interface OtlpAttribute {
  key: string;
  value: OtlpValue;
}
interface OtlpSpan {
  traceId: string;
  spanId: string;
  parentSpanId?: string;
  name: string;
  kind: number;
  attributes?: OtlpAttribute[];
}
interface OtlpRequest {
  resourceSpans?: { resource?: { attributes?: OtlpAttribute[] }; scopeSpans?: { scope?: { name: string }; spans?: OtlpSpan[] }[] }[];
}

/** A span as received, with who sent it. */
interface Received extends OtlpSpan {
  service: string;
  scope: string;
}

const SPAN_KIND = { SERVER: 2, CONSUMER: 5 } as const;

const attr = (span: OtlpSpan, key: string): unknown => {
  const v = span.attributes?.find((a) => a.key === key)?.value;
  return v?.stringValue ?? v?.intValue ?? v?.boolValue ?? v?.doubleValue;
};

/** The collector double: every span of every POST /v1/traces, and the raw bodies. */
async function startCollector(): Promise<{ url: string; spans: Received[]; bodies: string[]; close(): Promise<void> }> {
  const spans: Received[] = [];
  const bodies: string[] = [];
  const server: Server = createServer((req, res) => {
    let body = '';
    req.setEncoding('utf8');
    req.on('data', (d: string) => (body += d));
    req.on('end', () => {
      if (req.method !== 'POST' || req.url !== '/v1/traces' || !/json/.test(req.headers['content-type'] ?? '')) {
        res.writeHead(404).end();
        return;
      }
      bodies.push(body);
      const parsed = JSON.parse(body) as OtlpRequest;
      for (const rs of parsed.resourceSpans ?? []) {
        const service = String(rs.resource?.attributes?.find((a) => a.key === 'service.name')?.value.stringValue);
        for (const ss of rs.scopeSpans ?? []) for (const s of ss.spans ?? []) spans.push({ ...s, service, scope: ss.scope?.name ?? '' });
      }
      res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as { port: number };
  return {
    url: `http://127.0.0.1:${port}`,
    spans,
    bodies,
    close: () => new Promise<void>((r) => server.close(() => r())),
  };
}

/** An entry point of src/bin as a process of its own (tsx compiles it, as the other process tests do). */
const startEntry = (entry: string, env: Record<string, string>): Started => startProcess(process.execPath, tsEntry(entry), { cwd: root, env: cleanEnv(env) });

/** SIGTERM to this one process (by its pid), and its exit code. */
async function stop(p: Started): Promise<number | null> {
  if (p.proc.exitCode !== null || p.proc.signalCode !== null) return p.proc.exitCode;
  process.kill(p.proc.pid!, 'SIGTERM');
  return (await p.exited).code;
}

// Whatever a failed test left running.
afterAll(() => killAll());

/** Each dialect with the API and a worker as two processes, and SQLite with `npm start`'s one. */
const LAYOUTS = [...DIALECTS.map((d) => [d, 'api + worker'] as const), ['sqlite', 'one process'] as const];

describe.each(LAYOUTS)('OpenTelemetry traces (%s, %s)', (dialect, layout) => {
  let db: TestDatabase;
  let collector: Awaited<ReturnType<typeof startCollector>>;
  /** The API's process and the worker's (the same one for `npm start`). */
  let api: Started;
  let worker: Started;
  let baseUrl: string;
  const prefix = `meshq-test-otel-${dialect}-${layout === 'one process' ? 'one' : 'two'}-${process.pid}`;
  let job: { id: string; state: string; result: { id: string } };
  let token: string;
  let apiExit: number | null;
  let workerExit: number | null;

  beforeAll(async () => {
    db = await createTestDatabase(dialect, 'otel');
    collector = await startCollector();
    const port = await freePort();
    baseUrl = `http://127.0.0.1:${port}`;
    const env = {
      ...db.env,
      // A database password (PostgreSQL here trusts local connections and ignores it) that no span may show.
      ...(dialect === 'postgresql' ? { DATABASE_URL: db.url.replace('postgres@', `postgres:${DB_PASSWORD}@`) } : {}),
      QUEUE_PREFIX: prefix,
      ADMIN_PASSWORD,
      HOST: '127.0.0.1',
      PORT: String(port),
      OTEL_EXPORTER_OTLP_ENDPOINT: collector.url,
    };
    if (layout === 'one process') {
      api = worker = startEntry('src/bin/both.ts', env);
    } else {
      api = startEntry('src/bin/api.ts', env);
      worker = startEntry('src/bin/worker.ts', env);
    }
    await waitFor(
      'the API to answer',
      async () => {
        if (api.proc.exitCode !== null) throw new Error(`the API exited:\n${api.output()}`);
        return fetch(`${baseUrl}/healthz`).then((r) => r.ok, () => false);
      },
      90_000,
      200,
    );

    // The job: submitted over HTTP, waited for (the worker may still be starting).
    const res = await fetch(`${baseUrl}/api/v1/jobs?wait=60000`, {
      method: 'POST',
      headers: { authorization: basic, 'content-type': 'application/json' },
      body: JSON.stringify({ type: 'config.create', data: { name: 'traced', subnet: '10.77.0.0/24' } }),
    });
    expect(res.status, await res.clone().text()).toBe(200);
    job = (await res.json()) as typeof job;
    // A secret the API makes: it must appear in no span.
    const created = await fetch(`${baseUrl}/api/v1/tokens`, {
      method: 'POST',
      headers: { authorization: basic, 'content-type': 'application/json' },
      body: JSON.stringify({ name: 'traced-token' }),
    });
    expect(created.status, await created.clone().text()).toBe(202);
    token = ((await created.json()) as { token: string }).token;

    // Both flush their buffered spans on the way out.
    [apiExit, workerExit] = api === worker ? await stop(api).then((c) => [c, c]) : await Promise.all([stop(api), stop(worker)]);
  }, 180_000);

  afterAll(async () => {
    for (const p of new Set([api, worker])) if (p && p.proc.exitCode === null && p.proc.signalCode === null) p.proc.kill('SIGKILL');
    await collector?.close();
    await deletePrefix(prefix);
    await db?.drop();
  });

  it('stops both processes cleanly on SIGTERM, tracing on', () => {
    expect(job.state).toBe('completed');
    expect(apiExit, api.output()).toBe(0);
    expect(workerExit, worker.output()).toBe(0);
  });

  it('links the HTTP request, the job run and its SQL in one trace', () => {
    const spans = collector.spans;
    const request = spans.find(
      (s) => s.service === 'meshq-api' && s.kind === SPAN_KIND.SERVER && s.scope === '@opentelemetry/instrumentation-http' && s.name === 'POST /api/v1/jobs',
    );
    expect(request, `no server span for POST /api/v1/jobs among ${spans.map((s) => `${s.service}:${s.name}`).join(', ')}`).toBeDefined();
    const trace = spans.filter((s) => s.traceId === request!.traceId);
    const run = trace.find((s) => s.service === 'meshq-worker' && s.kind === SPAN_KIND.CONSUMER && attr(s, 'bullmq.job.id') === job.id);
    expect(run, `the job's run is not in the request's trace: ${trace.map((s) => `${s.service}:${s.name}`).join(', ')}`).toBeDefined();
    expect(attr(run!, 'bullmq.job.name')).toBe('config.create');

    // The run descends from the request: worker -> add (API) -> ... -> the request.
    const byId = new Map(trace.map((s) => [s.spanId, s]));
    const ancestors = (s: Received): Received[] => {
      const up: Received[] = [];
      for (let p = s.parentSpanId ? byId.get(s.parentSpanId) : undefined; p; p = p.parentSpanId ? byId.get(p.parentSpanId) : undefined) up.push(p);
      return up;
    };
    expect(ancestors(run!)).toContain(request);

    if (dialect === 'postgresql') {
      const sql = trace.filter((s) => s.scope === '@opentelemetry/instrumentation-pg' && s.service === 'meshq-worker' && ancestors(s).includes(run!));
      expect(sql.length, 'no PostgreSQL span under the job run').toBeGreaterThan(0);
      expect(sql.some((s) => /insert/i.test(String(attr(s, 'db.query.text') ?? attr(s, 'db.statement'))))).toBe(true);
      expect(sql.every((s) => attr(s, 'db.system.name') === 'postgresql' || attr(s, 'db.system') === 'postgresql')).toBe(true);
    }
  });

  it('puts no secret in any span, and no job data in Redis spans', () => {
    const everything = collector.bodies.join('\n');
    expect(everything.length).toBeGreaterThan(0);
    for (const secret of [TEST_SECRET_KEY, ADMIN_PASSWORD, basic.slice('Basic '.length), token, DB_PASSWORD]) expect(everything).not.toContain(secret);
    expect(everything.toLowerCase()).not.toContain('authorization');
    const redis = collector.spans.filter((s) => s.scope === '@opentelemetry/instrumentation-ioredis');
    expect(redis.length).toBeGreaterThan(0);
    for (const s of redis) expect(JSON.stringify(s.attributes)).not.toContain('traced');
    // The config's name is in the job's data and in the row it inserted; SQL spans show neither.
    const sql = collector.spans.filter((s) => s.scope === '@opentelemetry/instrumentation-pg');
    for (const s of sql) expect(JSON.stringify(s.attributes)).not.toContain('traced');
    if (dialect === 'postgresql') expect(sql.some((s) => /values \(\?/.test(String(attr(s, 'db.query.text'))))).toBe(true);
  });
});

/**
 * Which packages an entry point's graph loads (the API's, the workers' and start-up's),
 * after prepareProcess ran on `env`: a resolve hook in a child process notes every
 * package a module or a require resolves to.
 */
async function packagesLoaded(env: Record<string, string>): Promise<{ tracing: boolean; packages: string[] }> {
  const script = `
    import { registerHooks } from 'node:module';
    const seen = new Set();
    registerHooks({
      resolve(specifier, context, next) {
        const r = next(specifier, context);
        const m = /node_modules\\/((?:@[^/]+\\/)?[^/]+)\\//.exec(r.url);
        if (m) seen.add(m[1]);
        return r;
      },
    });
    const { prepareProcess } = await import('./src/bin/telemetry.ts');
    const prepared = await prepareProcess('api');
    await import('./src/bin/bootstrap.ts');
    await import('./src/api/app.ts');
    await import('./src/jobs/worker.ts');
    process.stdout.write(JSON.stringify({ tracing: prepared.tracing !== undefined, packages: [...seen] }) + '\\n');
    process.exit(0);
  `;
  const { code, out } = await runProcess(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { cwd: root, env: cleanEnv(env), timeoutMs: 300_000 });
  expect(code, out).toBe(0);
  return JSON.parse(out.trim().split('\n').at(-1)!) as { tracing: boolean; packages: string[] };
}

/** OpenTelemetry's SDK, exporter, instrumentations and loader hooks; not its API package alone (prom-client imports it). */
const TRACING_PACKAGES = /^(@opentelemetry\/(?!api$).+|@fastify\/otel|bullmq-otel|import-in-the-middle|require-in-the-middle)$/;

describe('tracing settings', () => {
  // No database is reached: the graph is only loaded.
  const env = { DATABASE_URL: 'postgres://meshq@127.0.0.1:1/none', SECRET_KEY: TEST_SECRET_KEY };

  it('loads no OpenTelemetry SDK, instrumentation or loader hook when OTEL_EXPORTER_OTLP_ENDPOINT is unset', async () => {
    const off = await packagesLoaded(env);
    expect(off.tracing).toBe(false);
    expect(off.packages).toContain('bullmq');
    expect(off.packages.filter((p) => TRACING_PACKAGES.test(p))).toEqual([]);
    // The same probe sees them when tracing is on.
    const on = await packagesLoaded({ ...env, OTEL_EXPORTER_OTLP_ENDPOINT: 'http://127.0.0.1:9' });
    expect(on.tracing).toBe(true);
    expect(on.packages).toEqual(expect.arrayContaining(['@opentelemetry/sdk-trace', 'bullmq-otel', 'import-in-the-middle', '@opentelemetry/instrumentation-pg']));
  }, 120_000);

  it('shows SQL without its string literals', () => {
    expect(withoutStringLiterals(`select "m0".* from "mesh_config" as "m0" where "m0"."name" = 'c1' limit 1`)).toBe(
      'select "m0".* from "mesh_config" as "m0" where "m0"."name" = ? limit 1',
    );
    expect(withoutStringLiterals(`insert into t (a, b) values ('it''s', E'a\\\\b'); commit`)).toBe('insert into t (a, b) values (?, ?); commit');
    expect(withoutStringLiterals('begin; select pg_advisory_xact_lock_shared(42)')).toBe('begin; select pg_advisory_xact_lock_shared(42)');
  });

  it('refuses an endpoint that is not an http(s) URL, naming the variable', () => {
    const base = { DATABASE_URL: 'sqlite:/tmp/unused.db', SECRET_KEY: TEST_SECRET_KEY };
    expect(loadConfig(base, { generateSecretKey: false }).tracing).toBeUndefined();
    expect(loadConfig({ ...base, OTEL_EXPORTER_OTLP_ENDPOINT: 'http://collector:4318' }, { generateSecretKey: false }).tracing).toEqual({
      endpoint: 'http://collector:4318',
      serviceName: undefined,
    });
    expect(() => loadConfig({ ...base, OTEL_EXPORTER_OTLP_ENDPOINT: 'collector:4317' }, { generateSecretKey: false })).toThrow(ConfigError);
    expect(() => loadConfig({ ...base, OTEL_EXPORTER_OTLP_ENDPOINT: 'grpc://collector:4317' }, { generateSecretKey: false })).toThrow(/OTEL_EXPORTER_OTLP_ENDPOINT/);
    expect(() => loadConfig({ ...base, OTEL_EXPORTER_OTLP_ENDPOINT: 'http://c:4318', OTEL_SERVICE_NAME: 'has space' }, { generateSecretKey: false })).toThrow(/OTEL_SERVICE_NAME/);
  });
});
