/**
 * Liveness and readiness, the only routes reachable without credentials (orchestrators
 * probe them). Readiness answers 503 naming every check that failed, so a stuck rollout
 * says which component is down; the error texts only to an authenticated reader. Each
 * check is bounded so a hanging database cannot hang the probe.
 */
import type { FastifyInstance } from 'fastify';
import type { AppContext } from '../context.js';
import { pendingMigrations } from '../../db/migrate.js';
import type { Em } from '../../db/orm.js';
import { hasScope } from '../../domain/scopes.js';
import { SystemState } from '../../domain/entities/system.js';
import { redisPersistence } from '../../jobs/queue-client.js';
import { scheduleWarnings } from '../../jobs/snapshot-schedule.js';
import { errorResponses, json, livenessSchema, readinessSchema } from '../schemas.js';

const CHECK_TIMEOUT_MS = 3_000;

interface CheckResult {
  ok: boolean;
  error?: string;
}

async function bounded(name: string, fn: () => Promise<void>): Promise<CheckResult> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${name} did not answer within ${CHECK_TIMEOUT_MS} ms`)), CHECK_TIMEOUT_MS);
  });
  try {
    await Promise.race([fn(), timeout]);
    return { ok: true };
  } catch (err) {
    return { ok: false, error: err instanceof Error ? err.message : String(err) };
  } finally {
    clearTimeout(timer);
  }
}

function withoutPassword(text: string, url: string): string {
  let password = '';
  try {
    password = decodeURIComponent(new URL(url).password);
  } catch {
    return text; // sqlite: no URL, no password
  }
  return password ? text.split(password).join('***') : text;
}

/** What /readyz says about keeping accepted jobs across a Redis restart. */
interface Durability {
  redis: 'aof' | 'none' | 'unknown';
  required: 'aof' | 'none';
  note?: string;
}

function durabilityOf(p: Awaited<ReturnType<typeof redisPersistence>>, required: 'aof' | 'none'): Durability {
  const redis = p.aof === true ? 'aof' : p.aof === false ? 'none' : 'unknown';
  return redis === 'aof' ? { redis, required } : { redis, required, note: 'a Redis restart may lose accepted jobs' };
}

const unservedQueues = (workers: Record<string, number | null>): string[] =>
  Object.entries(workers)
    .filter(([, n]) => n === 0)
    .map(([queue]) => `no worker is serving the ${queue} queue: jobs submitted to it wait until one starts`);

const PROBE_KEY = 'readiness-probe';

const SQLITE_LOCK_HELD =
  'the SQLite write lock is held by another connection (a long job, a restore or another process): writes wait for it';

const isSqliteBusy = (err: unknown): boolean => String((err as { code?: unknown })?.code ?? '').startsWith('SQLITE_BUSY');

/**
 * Updates one row of system_state. On PostgreSQL on a pooled connection of its own (no
 * data lock: a restore in progress must not make the API unready); on SQLite through the
 * unit of work, whose writer lock keeps it out of a job's transaction on the shared
 * connection. On SQLite it does not wait for another connection's write lock: a lock
 * held elsewhere means the file takes writes, and waiting for it would hold the probe
 * for as long as the other writer runs. That case is a warning, not unreadiness.
 */
async function writeProbe(app: AppContext): Promise<string | undefined> {
  const write = (em: Em) =>
    em.upsert(SystemState, { key: PROBE_KEY, value: { at: new Date().toISOString() }, updatedAt: new Date() });
  if (app.config.dialect === 'postgresql') {
    await write(app.orm.em.fork() as Em);
    return undefined;
  }
  try {
    await app.uow.write(async (em) => void (await write(em)), { lockWaitMs: 0 });
    return undefined;
  } catch (err) {
    if (isSqliteBusy(err)) return SQLITE_LOCK_HELD;
    throw err;
  }
}

export async function healthRoutes(api: FastifyInstance, opts: { app: AppContext }): Promise<void> {
  const { app } = opts;
  const started = Date.now();

  api.get('/healthz', { config: { scope: 'public' }, schema: { tags: ['health'], summary: 'Liveness', response: { 200: json('The process answers', livenessSchema), ...errorResponses() } } }, async () => ({ status: 'ok' }));

  api.get(
    '/readyz',
    {
      config: { scope: 'public' },
      schema: {
        tags: ['health'],
        summary: 'Readiness: database, Redis, migrations',
        description: 'Public: ready or not and which component is down. With credentials of `read` scope, also the error of each failed check.',
        response: {
          200: json('Ready', readinessSchema),
          503: json('Not ready: `failed` names the components that are down', readinessSchema),
          ...errorResponses(),
        },
      },
    },
    async (request, reply) => {
      let durability: Durability = { redis: 'unknown', required: app.config.redisDurability };
      let workers: Record<string, number | null> = {};
      let lockWarning: string | undefined;
      const [database, redis, migrations, warned] = await Promise.all([
        bounded('database', async () => {
          const check = await app.orm.checkConnection();
          // Never let a driver message echo the database password, even to a reader.
          if (!check.ok) throw new Error(withoutPassword(check.reason ?? 'not connected', app.config.databaseUrl));
          // Reachable is not enough (a full disk still answers reads): one tiny write.
          try {
            lockWarning = await writeProbe(app);
          } catch (err) {
            throw new Error(`cannot write: ${withoutPassword(err instanceof Error ? err.message : String(err), app.config.databaseUrl)}`);
          }
        }),
        bounded('redis', async () => {
          const pong = await app.queues.connection.ping();
          if (pong !== 'PONG') throw new Error(`unexpected answer ${pong}`);
          durability = durabilityOf(await redisPersistence(app.queues.connection), app.config.redisDurability);
          // REDIS_DURABILITY=aof and AOF was turned off since start-up: accepted jobs are at risk.
          if (durability.redis !== 'aof' && app.config.redisDurability === 'aof') throw new Error(`Redis does not persist with AOF (REDIS_DURABILITY=aof): ${durability.redis}`);
          workers = await app.queues.workerCounts();
        }),
        bounded('migrations', async () => {
          const pending = await pendingMigrations(app.orm);
          if (pending.length > 0) throw new Error(`pending: ${pending.join(', ')}`);
        }),
        // Overdue scheduled backups: a warning, not unreadiness.
        scheduleWarnings(app, started).catch(() => [] as string[]),
      ]);
      // Error texts name hosts, ports and driver internals: only for an authenticated reader.
      const detailed = request.principal !== null && hasScope(request.principal.scopes, 'read');
      const show = (c: CheckResult): CheckResult => (detailed || c.ok ? c : { ok: false });
      const checks = { database: show(database), redis: show(redis), migrations: show(migrations) };
      const failed = Object.entries(checks).filter(([, c]) => !c.ok).map(([name]) => name);
      const warnings = [...warned, ...unservedQueues(workers), ...(lockWarning ? [lockWarning] : [])];
      return reply
        .status(failed.length ? 503 : 200)
        .send({ status: failed.length ? 'unavailable' : 'ready', failed, checks, durability, warnings, ...(detailed ? { workers } : {}) });
    },
  );
}
