/**
 * A whole meshq in the test process: its own database and queue prefix, the API (driven
 * with inject) and, unless told otherwise, in-process workers. `stop()` closes all of it
 * and drops the database.
 */
import { randomBytes } from 'node:crypto';
import { Writable } from 'node:stream';
import type { FastifyInstance, InjectOptions, LightMyRequestResponse } from 'fastify';
import type { DestinationStream } from 'pino';
import { buildApi, type ApiOptions } from '../../src/api/app.js';
import { bootstrap, type AppContext } from '../../src/bin/bootstrap.js';
import { loadConfig, type Dialect } from '../../src/config.js';
import { startWorkers, type WorkerOptions, type WorkerPool } from '../../src/jobs/worker.js';
import { createTestDatabase, testEnv, type TestDatabase } from './db.js';
import type { EmqxDouble } from './emqx-double.js';
import { SHARED_MQTT_URL } from './mosquitto.js';
import { startOwnPostgres, type OwnPostgres } from './own-services.js';
import { deletePrefix } from './redis.js';

export const basic = (user: string, password: string) => ({ authorization: 'Basic ' + Buffer.from(`${user}:${password}`).toString('base64') });

/** A log destination that hands every chunk written to it to `append` (log capture in memory). */
export const memorySink = (append: (text: string) => void): Writable =>
  new Writable({
    write(chunk, _enc, done) {
      append(String(chunk));
      done();
    },
  });

/** The settings for MQTT on the shared Mosquitto and EMQX's API on the contract double. */
export const mqttEnv = (emqx: EmqxDouble, enabled = true): Record<string, string> => ({
  MQTT_ENABLED: String(enabled),
  MQTT_URL: SHARED_MQTT_URL,
  EMQX_API_URL: emqx.url,
  EMQX_API_KEY: emqx.apiKey,
  EMQX_API_SECRET: emqx.apiSecret,
});

/** The names of every config in the app's database, read straight from the table, sorted. */
export const configNames = async (app: AppContext): Promise<string[]> =>
  ((await app.orm.em.fork().getConnection().execute('select name from mesh_config order by name')) as { name: string }[]).map((r) => r.name);

export interface StackOptions {
  adminPassword: string;
  /** In-process workers (default true). */
  workers?: boolean;
  /** More environment for the config, over the test database's. */
  env?: Record<string, string>;
  /** Changes the bootstrapped context before the workers and the API see it. */
  app?: (app: AppContext) => AppContext;
  /** Where the application's log lines go (bootstrap's logDestination). */
  logDestination?: DestinationStream;
  workerOptions?: WorkerOptions;
  apiOptions?: ApiOptions;
}

export interface JobView {
  id: string;
  type: string;
  state: string;
  progress: unknown;
  attempts: number;
  result: Record<string, unknown> | null;
  error: { code: string; message: string } | null;
  finishedAt: string | null;
}

export interface Stack {
  db: TestDatabase;
  app: AppContext;
  api: FastifyInstance;
  pool?: WorkerPool;
  auth: Record<string, string>;
  call(opts: InjectOptions): Promise<LightMyRequestResponse>;
  /** Submits a public job through the API and waits for it to finish (200, or 422 when it failed). */
  job(type: string, data: unknown): Promise<JobView>;
  get<T = unknown>(url: string): Promise<T>;
  stop(): Promise<void>;
}

export async function startStack(
  dialect: Dialect,
  label: string,
  opts: StackOptions,
): Promise<Stack> {
  const db = await createTestDatabase(dialect, label);
  let app: AppContext | undefined;
  let pool: WorkerPool | undefined;
  let api: FastifyInstance | undefined;
  try {
    app = await bootstrap('test', db.config({ ADMIN_PASSWORD: opts.adminPassword, ...opts.env }), { logDestination: opts.logDestination });
    if (opts.app) app = opts.app(app);
    if (opts.workers !== false) pool = await startWorkers(app, opts.workerOptions);
    api = await buildApi(app, opts.apiOptions);
  } catch (err) {
    await pool?.close();
    await app?.close();
    await db.drop();
    throw err;
  }
  const auth = basic('admin', opts.adminPassword);
  const call = (o: InjectOptions) => api!.inject({ ...o, headers: { ...auth, ...o.headers } });
  return {
    db,
    app,
    api,
    pool,
    auth,
    call,
    async job(type, data) {
      const res = await call({ method: 'POST', url: '/api/v1/jobs?wait=20000', payload: { type, data } });
      // 200 completed, 422 failed (with the job and its error): both finished.
      if (res.statusCode !== 200 && res.statusCode !== 422) throw new Error(`${type}: ${res.statusCode} ${res.body}`);
      return res.json<JobView>();
    },
    async get<T>(url: string) {
      const res = await call({ method: 'GET', url });
      if (res.statusCode !== 200) throw new Error(`GET ${url}: ${res.statusCode} ${res.body}`);
      return res.json<T>();
    },
    async stop() {
      await api?.close();
      await pool?.close();
      await deletePrefix(app!.config.queuePrefix);
      await app!.close();
      await db.drop();
    },
  };
}

/**
 * The teardown of a test that bootstrapped an app on its own database: closes the app (if
 * it got that far), deletes its queue prefix, drops the database.
 */
export async function closeAppAndDatabase(app: AppContext | undefined, db: TestDatabase | undefined): Promise<void> {
  const prefix = app?.config.queuePrefix;
  await app?.close();
  if (prefix) await deletePrefix(prefix);
  await db?.drop();
}

export interface OwnPostgresApp {
  /** The test's own PostgreSQL, to freeze or stop; stopped by `stopOwnServices()` at the latest. */
  pg: OwnPostgres;
  app: AppContext;
  pool: WorkerPool;
  /** Closes the workers and the app and deletes the queue prefix; the PostgreSQL is left as it is. */
  close(): Promise<void>;
}

/** A meshq (in-process workers, its own queue prefix) on a PostgreSQL the test starts itself. */
export async function startOwnPostgresApp(label: string, env: Record<string, string>): Promise<OwnPostgresApp> {
  const pg = await startOwnPostgres();
  const url = await pg.createDatabase(`meshq_${label}`);
  const prefix = `meshq-test-${label}-${randomBytes(4).toString('hex')}`;
  const app = await bootstrap('test', loadConfig({ ...testEnv(url), ...env }, { queuePrefix: prefix }));
  const pool = await startWorkers(app);
  return {
    pg,
    app,
    pool,
    async close() {
      await pool.close();
      await deletePrefix(prefix);
      await app.close();
    },
  };
}
