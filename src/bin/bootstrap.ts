/**
 * Start-up shared by every role: validate the environment once, connect to the database
 * with retries, migrate under a lock, check Redis, then hand back what the role needs.
 * Shutdown runs the registered closers in reverse order of start-up.
 */
import { createServer } from 'node:net';
import type { DestinationStream } from 'pino';
import { ConfigError, describeRedis, loadConfig, loadDotEnv, redactUrl, type Config } from '../config.js';
import { connectOrm, sqliteNative } from '../db/orm.js';
import { OffLoopCheckpoints } from '../db/sqlite-checkpoint.js';
import { migrateUnderLock } from '../db/migrate.js';
import { UnitOfWork } from '../db/unit-of-work.js';
import { createLogger, type Logger } from '../logger.js';
import { sweepStaleSpools } from '../snapshots/spool.js';
import { claimQueuePrefix, JobQueues, requireRedisDurability } from '../jobs/queue-client.js';
import { checkRedis } from '../jobs/redis.js';
import { randomUUID } from 'node:crypto';
import type { Orm } from '../db/orm.js';
import { SystemState } from '../domain/entities/system.js';
import { ensureAdmin } from '../repositories/admin-account.js';
import { parseServerKey } from '../crypto.js';
import type { AppContext } from '../api/context.js';
import type { Telemetry } from 'bullmq';
import type { PreparedProcess } from './telemetry.js';

export type { AppContext };

/** Spool files a killed process left behind (src/snapshots/spool.ts); never a reason not to start. */
async function sweepSpools(log: Logger): Promise<void> {
  try {
    const removed = await sweepStaleSpools();
    if (removed.length > 0) log.info({ removed }, 'removed temporary snapshot files left by processes that are gone');
  } catch (err) {
    log.warn({ err }, 'could not look for temporary snapshot files left by processes that are gone');
  }
}

/** Roles whose process (or main thread) answers HTTP: `npm run api`, and `npm start`'s main thread. */
const SERVES_HTTP = new Set(['api', 'both']);

export async function bootstrap(
  role: string,
  config?: Config,
  opts: { logDestination?: DestinationStream; jobTelemetry?: Telemetry } = {},
): Promise<AppContext> {
  if (!config) loadDotEnv();
  const cfg = config ?? loadConfig();
  const log = createLogger(cfg.logLevel, 'meshq', opts.logDestination, cfg.logFormat).child({ role });
  log.info({ database: redactUrl(cfg.databaseUrl), redis: describeRedis(cfg) }, 'starting');

  const orm = await connectOrm(cfg, log);
  try {
    const migration = await migrateUnderLock(orm, cfg);
    if (migration.applied.length > 0) log.info({ applied: migration.applied }, 'migrations applied');
    await checkRedis(cfg);
  } catch (err) {
    await orm.close(true);
    throw err;
  }
  if (role !== 'migrate') await sweepSpools(log);
  const uow = new UnitOfWork(orm, cfg.dialect, log);
  // SQLite: a process that answers HTTP never checkpoints the WAL on its own loop.
  const checkpoints = cfg.dialect === 'sqlite' && SERVES_HTTP.has(role) ? new OffLoopCheckpoints(await sqliteNative(orm), log) : undefined;
  const serverKey = parseServerKey(cfg.secretKey);
  // Workers wait out a Redis blip (a follow-up job must not be lost to it); whatever
  // answers clients fails fast, so a submission answers 503 instead of hanging.
  const queues = new JobQueues(cfg, serverKey, undefined, { patient: role === 'worker', telemetry: opts.jobTelemetry });
  try {
    await queues.ready();
    const persistence = await requireRedisDurability(queues.connection, cfg);
    if (persistence.aof !== true) log.warn({ redis: describeRedis(cfg), ...persistence }, 'REDIS_DURABILITY=none: Redis does not persist with AOF (or cannot say); a Redis restart may lose accepted jobs');
    await claimQueuePrefix(queues.connection, cfg, await installationId(orm));
  } catch (err) {
    await queues.close();
    await checkpoints?.close();
    await orm.close(true);
    // An ACL that denies INFO stops BullMQ itself (and the durability check): say which.
    if (err instanceof Error && /^NOPERM/.test(err.message)) {
      throw new ConfigError([
        `REDIS_URL: the Redis user of ${cfg.redisSentinel ? describeRedis(cfg) : redactUrl(cfg.redisUrl)} may not run a command meshq needs (${err.message}); ` +
          'allow it in the user\'s ACL (BullMQ and the AOF check need +info)',
      ]);
    }
    throw err;
  }
  await ensureAdmin({ uow, serverKey, log }, cfg.adminPassword);

  return {
    config: cfg,
    log,
    orm,
    uow,
    queues,
    serverKey,
    jobTelemetry: opts.jobTelemetry,
    async close() {
      await queues.close();
      await checkpoints?.close();
      await orm.close(true);
    },
  };
}

/** The system_state row naming this installation: made by its first process, never exported. */
const INSTALLATION_KEY = 'installation-id';

/** This database's installation id (created once, by whichever process gets there first). */
async function installationId(orm: Orm): Promise<string> {
  const em = orm.em.fork();
  await em.upsert(SystemState, { key: INSTALLATION_KEY, value: randomUUID(), updatedAt: new Date() }, { onConflictAction: 'ignore' });
  const row = await orm.em.fork().findOneOrFail(SystemState, { key: INSTALLATION_KEY });
  return String(row.value);
}

/**
 * Runs a role: start-up errors print one clear message and exit 1; SIGTERM/SIGINT stop
 * the role (its own stop first: the API stops listening, workers finish active jobs),
 * then close queues, Redis and the ORM, and exit 0. A repeated signal during shutdown
 * is logged and changes nothing (docker stop, Kubernetes and an impatient Ctrl-C all
 * send more than one); the orchestrator's SIGKILL after its grace period is what cuts
 * a shutdown short.
 */
export async function runRole(
  role: string,
  start: (app: AppContext) => Promise<() => Promise<void>>,
  prepared: PreparedProcess = {},
): Promise<void> {
  let app: AppContext;
  let stop: () => Promise<void>;
  try {
    app = await bootstrap(role, prepared.config, { jobTelemetry: prepared.tracing?.jobs });
    stop = await start(app);
  } catch (err) {
    const message = err instanceof ConfigError || (err instanceof Error && /Unavailable/.test(err.name)) ? err.message : String((err as Error)?.stack ?? err);
    process.stderr.write(`meshq ${role}: failed to start: ${message}\n`);
    process.exit(1);
  }
  let stopping = false;
  const shutdown = async (signal: NodeJS.Signals) => {
    if (stopping) {
      app.log.warn({ signal }, 'shutdown already under way: waiting for active jobs to finish (SIGKILL stops at once)');
      return;
    }
    stopping = true;
    app.log.info({ signal }, 'shutting down');
    try {
      await stop();
      await app.close();
      // Last: the spans of the shutdown itself are sent too.
      await prepared.tracing?.shutdown();
      app.log.info('stopped');
      process.exit(0);
    } catch (err) {
      app.log.error({ err }, 'shutdown failed');
      process.exit(1);
    }
  };
  // on, not once: after a once-listener has fired, the next signal meets Node's default
  // action and kills the process in the middle of its jobs.
  process.on('SIGTERM', (signal) => void shutdown(signal));
  process.on('SIGINT', (signal) => void shutdown(signal));
}

/** A port another process holds: one line at start-up instead of a stack. */
class PortUnavailableError extends Error {
  constructor(host: string, port: number) {
    super(`port ${port} on ${host} is already in use (another meshq, or another program, listens there): stop it or set PORT/HOST`);
    this.name = 'PortUnavailableError';
  }
}

const inUse = (err: unknown) => (err as { code?: unknown } | undefined)?.code === 'EADDRINUSE';

/**
 * Fails with one line when the API's port is taken. `npm start` calls it before its
 * workers start, so a second meshq started by mistake takes no job before it stops.
 */
export async function assertPortFree(host: string, port: number): Promise<void> {
  const probe = createServer();
  await new Promise<void>((resolve, reject) => {
    probe.once('error', (err) => reject(inUse(err) ? new PortUnavailableError(host, port) : err));
    probe.listen({ host, port, exclusive: true }, () => probe.close(() => resolve()));
  });
}

/** api.listen, with a port in use reported in one line. */
export async function listenApi(api: { listen(opts: { host: string; port: number }): Promise<unknown> }, host: string, port: number): Promise<void> {
  try {
    await api.listen({ host, port });
  } catch (err) {
    throw inUse(err) ? new PortUnavailableError(host, port) : err;
  }
}
