/**
 * ORM bootstrap: one MikroORM instance per process, SQLite or PostgreSQL by DATABASE_URL.
 */
import { backoffDelay } from '../backoff.js';
import { mkdirSync } from 'node:fs';
import type Database from 'better-sqlite3';
import { dirname } from 'node:path';
import { MikroORM, type Options } from '@mikro-orm/core';
import { Migrator } from '@mikro-orm/migrations';
import { PostgreSqlDriver } from '@mikro-orm/postgresql';
import { SqliteDriver } from '@mikro-orm/sqlite';
import type { EntityManager } from '@mikro-orm/sql';
import type { Logger } from 'pino';
import { CompiledQuery, type DatabaseConnection as KyselyConnection } from 'kysely';
import { redactUrl, type Config } from '../config.js';
import { ALL_ENTITIES } from '../domain/entities/index.js';
import { MIGRATIONS } from '../migrations/index.js';
import { assertUtf8, UTF8_SESSION } from './encoding.js';
import { declarePeerLinkReferences } from '../migrations/peer-link-references.js';

export type Orm = MikroORM;
export type Em = EntityManager;

/**
 * How long SQLite waits for another connection's write lock before SQLITE_BUSY. A write
 * transaction's BEGIN IMMEDIATE waits asynchronously (sqliteBeginImmediate); the
 * connection's busy_timeout covers what is left (start-up migrations, and reads in the
 * rare moments WAL makes them wait), where better-sqlite3 waits synchronously.
 */
const SQLITE_BUSY_TIMEOUT_MS = 5_000;

/** SQLite's page cache per connection, KiB: SQLite's own default (see applySqlitePragmas). */
const SQLITE_CACHE_KIB = 2000;
/** The page cache of a transaction that asks for a large one (sqliteLargePageCache), KiB. */
const SQLITE_LARGE_CACHE_KIB = 64 * 1024;

/** Longest wait for a new PostgreSQL connection (or a free one from the pool) once started. */
const POOL_CONNECT_TIMEOUT_CAP_MS = 10_000;

export function ormOptions(
  config: Pick<Config, 'dialect' | 'databaseUrl' | 'sqlitePath' | 'dbPoolMax'> & Partial<Pick<Config, 'dbConnectTimeoutMs' | 'dbStatementTimeoutMs'>>,
): Partial<Options> {
  const common: Partial<Options> = {
    entities: [...ALL_ENTITIES],
    extensions: [Migrator],
    migrations: {
      migrationsList: MIGRATIONS,
      tableName: 'mikro_orm_migrations',
      silent: true,
      snapshot: false,
      snapshotOnMigrate: false,
      allOrNothing: true,
      transactional: true,
    },
    ensureDatabase: false,
    allowGlobalContext: false,
    debug: false,
  };
  if (config.dialect === 'sqlite') {
    mkdirSync(dirname(config.sqlitePath!), { recursive: true });
    return { ...common, driver: SqliteDriver, dbName: config.sqlitePath! };
  }
  return {
    ...common,
    driver: PostgreSqlDriver,
    clientUrl: config.databaseUrl,
    // peer_link's references are triggers there, not foreign keys (src/migrations/peer-link-references.ts).
    discovery: { onMetadata: declarePeerLinkReferences },
    pool: { min: 0, max: config.dbPoolMax },
    driverOptions: {
      // Without these a frozen or unreachable PostgreSQL holds a request (and its pool
      // slot) forever: taking a connection fails after a bound, and the server cancels
      // a statement running past DB_STATEMENT_TIMEOUT_MS (0: never), which the job
      // retries like any infrastructure error.
      connectionTimeoutMillis: Math.min(Math.max(config.dbConnectTimeoutMs ?? POOL_CONNECT_TIMEOUT_CAP_MS, 1_000), POOL_CONNECT_TIMEOUT_CAP_MS),
      ...(config.dbStatementTimeoutMs ? { statement_timeout: config.dbStatementTimeoutMs } : {}),
    },
    // Once per connection, when the ORM's Kysely first uses it (src/db/pg-client.ts).
    onCreateConnection: async (connection) => {
      const results = await (connection as KyselyConnection).executeQuery<Record<string, unknown>>(CompiledQuery.raw(UTF8_SESSION));
      assertUtf8(results.rows);
    },
  };
}

class DatabaseUnavailableError extends Error {
  constructor(url: string, waitedMs: number, cause: unknown) {
    super(
      `database ${redactUrl(url)} did not accept connections within ${waitedMs} ms ` +
        `(DB_CONNECT_TIMEOUT_MS): ${redactError(cause, url)}`,
    );
    this.name = 'DatabaseUnavailableError';
  }
}

/**
 * PostgreSQL answered and said the database or the role does not exist, or refused the
 * password: waiting will not change that, so start-up stops at once and says what to run.
 * Named like DatabaseUnavailableError, so that start-up prints its message alone.
 */
class DatabaseNotSetUpError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'DatabaseUnavailableError';
  }
}

/** SQLSTATEs of a missing database (3D000), a missing or refused role (28000), a wrong password (28P01). */
const NOT_SET_UP = new Set(['3D000', '28000', '28P01']);

function notSetUp(err: unknown, url: string): DatabaseNotSetUpError | undefined {
  const code = (err as { code?: unknown } | undefined)?.code;
  if (typeof code !== 'string' || !NOT_SET_UP.has(code)) return undefined;
  const u = new URL(url);
  const quote = (v: string) => (/^[\w.-]+$/.test(v) ? v : `'${v.replace(/'/g, `'\\''`)}'`);
  const user = quote(decodeURIComponent(u.username) || 'postgres');
  const db = quote(decodeURIComponent(u.pathname.slice(1)) || decodeURIComponent(u.username) || 'postgres');
  const at = `-h ${quote(u.hostname)} -p ${u.port || '5432'} -U postgres`;
  const said = `database ${redactUrl(url)}: ${redactError(err, url)} (SQLSTATE ${code})`;
  return new DatabaseNotSetUpError(
    code === '3D000'
      ? `${said}. Create it as a PostgreSQL superuser: \`createdb ${at} -O ${user} ${db}\`, or fix DATABASE_URL`
      : `${said}. Create the role and its database as a PostgreSQL superuser: \`createuser ${at} -P ${user}\` then ` +
          `\`createdb ${at} -O ${user} ${db}\`, or fix the user or password in DATABASE_URL`,
  );
}

function redactError(err: unknown, url: string): string {
  const text = err instanceof Error ? err.message : String(err);
  let password = '';
  try {
    password = decodeURIComponent(new URL(url).password);
  } catch {
    /* not a URL: sqlite */
  }
  return password ? text.split(password).join('***') : text;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Start-up's connect retries: quick at first (a container coming up), never idle long. */
const CONNECT_BACKOFF = { baseMs: 100, capMs: 2_000 } as const;

/**
 * Connects with exponential backoff (a PostgreSQL container may still be starting),
 * bounded by DB_CONNECT_TIMEOUT_MS; the error names the URL without its password.
 */
export async function connectOrm(
  config: Pick<Config, 'dialect' | 'databaseUrl' | 'sqlitePath' | 'dbPoolMax' | 'dbConnectTimeoutMs'>,
  log?: Logger,
): Promise<Orm> {
  const orm = new MikroORM(ormOptions(config));
  const started = Date.now();
  for (let attempt = 1; ; attempt++) {
    const failure = await orm.connect().then(
      async () => {
        const check = await orm.checkConnection();
        return check.ok ? undefined : (check.error ?? check.reason);
      },
      (err: unknown) => err,
    );
    if (failure === undefined) break;
    const notThere = notSetUp(failure, config.databaseUrl);
    if (notThere) {
      await orm.close(true).catch(() => undefined);
      throw notThere;
    }
    const waited = Date.now() - started;
    const delay = backoffDelay(attempt, CONNECT_BACKOFF);
    if (waited + delay > config.dbConnectTimeoutMs) {
      await orm.close(true).catch(() => undefined);
      throw new DatabaseUnavailableError(config.databaseUrl, waited, failure);
    }
    log?.warn(
      { attempt, retryInMs: delay, url: redactUrl(config.databaseUrl), reason: redactError(failure, config.databaseUrl) },
      'database not reachable yet; retrying',
    );
    await sleep(delay);
  }
  if (config.dialect === 'sqlite') await applySqlitePragmas(orm);
  return orm;
}

/** The better-sqlite3 database under the ORM's one SQLite connection. */
export function sqliteNative(orm: Orm): Promise<Database.Database> {
  const conn = orm.em.getConnection() as unknown as { getNativeClient(): Promise<Database.Database> };
  return conn.getNativeClient();
}

/**
 * WAL lets readers proceed while one process writes; busy_timeout makes other processes
 * sharing the file wait for the write lock instead of failing at once.
 */
async function applySqlitePragmas(orm: Orm): Promise<void> {
  const db = await sqliteNative(orm);
  db.pragma('journal_mode = WAL');
  db.pragma('foreign_keys = ON');
  db.pragma(`busy_timeout = ${SQLITE_BUSY_TIMEOUT_MS}`);
  // WAL + NORMAL: a commit is durable once the WAL is checkpointed; a power cut may lose
  // the last transactions but never corrupts the file. FULL would fsync every job.
  db.pragma('synchronous = NORMAL');
  // SQLite's default, set explicitly: the page cache is a cap, not an allocation, but
  // pages a large transaction cached stay allocated (and the process's memory with them)
  // until the cap is lowered; so only the transaction that needs more raises it, for its
  // own duration (sqliteLargePageCache).
  db.pragma(`cache_size = ${-SQLITE_CACHE_KIB}`);
  cachePreparedStatements(db);
}

/**
 * Statements that raise this connection's page cache to SQLITE_LARGE_CACHE_KIB for one
 * transaction and lower it again (handing the cached pages back to malloc) once the
 * transaction ended, committed or not. For a write that keeps returning to more pages than
 * the default holds: a mesh.generate adding rows to a config that already has links
 * enters each row into peer_link's to_node_id index at one of n places, and at the
 * default those leaf pages are evicted and re-read (and spilled to the WAL) all along.
 * Anything else runs faster or as fast at the default (docs/benchmarks.md).
 */
export const sqliteLargePageCache = {
  raise: `pragma cache_size = ${-SQLITE_LARGE_CACHE_KIB}`,
  lower: `pragma cache_size = ${-SQLITE_CACHE_KIB}; pragma shrink_memory`,
} as const;

/**
 * Retries of a BEGIN IMMEDIATE that found the write lock taken: short at first (most
 * transactions are short), capped so that a freed lock is taken soon after.
 */
const LOCK_RETRY_BACKOFF = { baseMs: 2, capMs: 50 } as const;

const isBusy = (err: unknown): boolean => typeof (err as { code?: unknown })?.code === 'string' && (err as { code: string }).code.startsWith('SQLITE_BUSY');

/**
 * BEGIN IMMEDIATE without blocking the event loop while another connection (another
 * process, or the other thread of `npm start`) holds the write lock. better-sqlite3 runs
 * a statement to completion on the calling thread, busy_timeout's wait included, so the
 * BEGIN is tried with busy_timeout 0 and, when busy, tried again after an asynchronous
 * backoff, for as long as busy_timeout would have waited; then the SQLITE_BUSY error is
 * thrown as before. Once BEGIN IMMEDIATE has the lock, nothing else in the transaction
 * waits for it (WAL: commits do not wait for readers). The two pragmas and the BEGIN run
 * in one synchronous step, so no other statement of this thread sees busy_timeout 0.
 */
export async function sqliteBeginImmediate(db: Database.Database, waitMs = SQLITE_BUSY_TIMEOUT_MS, opts: { foreignKeys?: boolean } = {}): Promise<void> {
  // SQLite applies busy_timeout while preparing the pragma, so a cached statement would not
  // set it again; db.exec prepares and runs inside the addon without building a JS
  // Statement, which db.pragma does (about 20 us each, most of a job's SQLite overhead).
  // foreign_keys is set in the same call as the BEGIN (it cannot change inside a
  // transaction), so that no other statement of this connection runs with it off outside
  // the transaction; the caller turns it back on once the transaction ended.
  const keysOff = opts.foreignKeys === false ? 'pragma foreign_keys = off; ' : '';
  const attempt = `${keysOff}pragma busy_timeout = 0; begin immediate; pragma busy_timeout = ${SQLITE_BUSY_TIMEOUT_MS}`;
  const restore = `${keysOff ? 'pragma foreign_keys = on; ' : ''}pragma busy_timeout = ${SQLITE_BUSY_TIMEOUT_MS}`;
  const deadline = Date.now() + waitMs;
  for (let n = 1; ; n++) {
    let delay: number;
    try {
      db.exec(attempt);
      return;
    } catch (err) {
      // The BEGIN failed, so the last pragma did not run: put the wait back at once.
      db.exec(restore);
      delay = backoffDelay(n, LOCK_RETRY_BACKOFF);
      if (!isBusy(err) || Date.now() + delay > deadline) throw err;
    }
    await sleep(delay);
  }
}

const STATEMENT_CACHE_SIZE = 256;

/**
 * Kysely's SQLite driver prepares every query anew, and preparing showed as a large
 * part of a job's CPU time in profiles. MikroORM inlines parameter values into the SQL text, so its
 * queries rarely hit; what does is constant text: transaction control and the
 * bound-parameter statements of src/db/sql.ts (the hot path of every job).
 * better-sqlite3 statements are reusable once a call has returned (kysely runs them
 * synchronously to completion). Bounded: least recently used statements are dropped.
 */
function cachePreparedStatements(db: Database.Database): void {
  const prepare = db.prepare.bind(db);
  const cache = new Map<string, Database.Statement>();
  db.prepare = ((sql: string) => {
    let stmt = cache.get(sql);
    if (stmt) {
      cache.delete(sql);
    } else {
      stmt = prepare(sql);
      if (cache.size >= STATEMENT_CACHE_SIZE) cache.delete(cache.keys().next().value!);
    }
    cache.set(sql, stmt);
    return stmt;
  }) as typeof db.prepare;
}
