/**
 * Transaction boundaries. Every write in meshq goes through `write`, every consistent
 * multi-statement read through `read`.
 *
 * Restore exclusion: on PostgreSQL each write transaction takes a transaction-scoped
 * advisory lock, shared for operations and exclusive for a restore. The lock dies with
 * the transaction (commit, rollback or a killed connection), so a crashed restore never
 * leaves anything locked, and operations submitted during a restore wait, then run
 * against the restored data.
 *
 * SQLite has one writer, and better-sqlite3 is synchronous: two forks must not
 * interleave statements of two transactions on one connection, and a busy wait would
 * block the event loop. So write transactions are serialized per connection by an async
 * mutex, and the wait for another connection's write lock (another process, or the other
 * thread of `npm start`) is an asynchronous retry of BEGIN IMMEDIATE, never
 * better-sqlite3's synchronous busy wait.
 *
 * Write transactions are begun and ended here rather than by `em.transactional`, for
 * two reasons, both on the path of every job: the transaction's first statement can
 * carry its lock (PostgreSQL: `begin` and the advisory lock in one round trip, held back
 * to go with the first statement, src/db/pg-client.ts; SQLite: BEGIN IMMEDIATE, which the
 * ORM cannot issue), and the ORM's transaction machinery
 * (forks, event broadcasting, savepoint bookkeeping) was a large part of a job's CPU time.
 * The entity manager takes the transaction's connection as its transaction context, so
 * the ORM's queries, its flush, `em.getKysely()` and src/db/sql.ts all run on it, as
 * inside `em.transactional`. On SQLite that is the ORM's Kysely bound to its one
 * connection. On PostgreSQL the transaction holds a pooled `pg` client itself and the
 * context is a Kysely on that client (src/db/pg-client.ts): a restore loads its rows with
 * COPY on it, which Kysely cannot carry, and begin, commit and src/db/sql.ts's statements
 * go to the client directly, without Kysely's per-query layers. A nested
 * `em.transactional` inside a write transaction is not supported (savepoints; nothing
 * uses them).
 *
 * The transaction's function gets a handle (WriteTransaction) besides the entity manager:
 * whether the data lock is held exclusively, the pg client for COPY, bound statements on
 * the transaction's connection. Repositories are given it rather than looking transaction
 * state up from the entity manager.
 *
 * The end carries work too: a job's closing write (its ledger and audit rows,
 * src/db/closing-write.ts), run after the flush; on PostgreSQL sent with COMMIT in one
 * round trip. The flush itself is skipped when it has nothing to write (hasPendingChanges).
 */
import { Mutex } from 'async-mutex';
import { CompiledQuery, type Kysely } from 'kysely';
import type { Pool, PoolClient } from 'pg';
import type { Dialect } from '../config.js';
import { closingStatements, pgCommitQuery, recordedResult, type JobClosing } from './closing-write.js';
import { pgDataLock } from './locks.js';
import type Database from 'better-sqlite3';
import type { Logger } from 'pino';
import { DeferredCheckpoints } from './sqlite-checkpoint.js';
import { checkSqliteForeignKeys } from './sqlite-foreign-keys.js';
import { sqliteBeginImmediate, sqliteLargePageCache, sqliteNative, type Em, type Orm } from './orm.js';
import { pgPool, TransactionClient } from './pg-client.js';
import { BoundSql, type SqlStatement } from './sql.js';

/**
 * The first statement of a write transaction, with its lock. SQLite: BEGIN IMMEDIATE takes
 * the write lock at once, waiting (asynchronously, sqliteBeginImmediate) while another
 * process's writer (a restore) holds it; a deferred BEGIN would let the transaction's first read pin a
 * snapshot from before that writer's commit, and an operation submitted during a restore
 * in another worker process would then see the old data and fail NOT_FOUND for good, or
 * hit SQLITE_BUSY_SNAPSHOT at its first write. PostgreSQL: two statements in one simple
 * query (no parameters), sent with the transaction's first statement when it can be.
 */
const BEGIN = {
  sqlite: { shared: 'begin immediate', exclusive: 'begin immediate' },
  postgresql: {
    shared: `begin; ${pgDataLock('shared')}`,
    exclusive: `begin; ${pgDataLock('exclusive')}`,
  },
} as const;

/** Bound on the entity managers kept for reuse (UnitOfWork.idleForks): more than any worker's concurrency needs. */
const MAX_IDLE_FORKS = 64;

interface WriteOptions {
  /**
   * Take the data lock exclusively (restore); operations take it shared. On SQLite the
   * transaction's foreign keys are checked once, before commit, instead of by each
   * statement (src/db/sqlite-foreign-keys.ts).
   */
  exclusive?: boolean;
  /**
   * SQLite: how long to wait for another connection's write lock before SQLITE_BUSY
   * (default: the busy timeout). A probe that only asks "can a write begin?" passes 0.
   */
  lockWaitMs?: number;
}

/**
 * Whether a flush has anything to write. A flush walks the identity map and the persist
 * and remove stacks for changes; with all three empty it finds none, and skipping it
 * saves its event and change-set machinery. A job that reads its rows as views only
 * (repositories read those with `unmanaged`, below) and writes through src/db/sql.ts,
 * like node.update, never pays for a flush.
 */
function hasPendingChanges(em: Em): boolean {
  const uow = em.getUnitOfWork();
  return uow.getPersistStack().size > 0 || uow.getRemoveStack().size > 0 || !uow.getIdentityMap()[Symbol.iterator]().next().done;
}

/**
 * Find options for a read whose rows only become plain views: kept out of the identity
 * map, a transaction that reads nothing else managed skips its flush (hasPendingChanges).
 */
export const unmanaged = { disableIdentityMap: true } as const;

/** What a repository may know of the write transaction it runs in. */
export interface TransactionHandle {
  /** Whether the transaction holds the data lock exclusively (a restore). */
  readonly exclusive: boolean;
  /** PostgreSQL, exclusive transactions: the pooled client the transaction runs on (for COPY); otherwise undefined. */
  readonly pgClient: PoolClient | undefined;
  /** Bound statements on the transaction's connection. */
  readonly sql: BoundSql;
  /**
   * SQLite: this transaction writes a lot; its commit leaves the WAL checkpoint to a thread
   * (src/db/sqlite-checkpoint.ts) instead of running it inside the commit. PostgreSQL: nothing.
   */
  checkpointAfterCommit(): void;
  /**
   * SQLite: this transaction's writes keep returning to more pages than the default page
   * cache holds; the connection's cache is raised until the transaction ends
   * (sqliteLargePageCache). PostgreSQL: nothing.
   */
  largePageCache(): void;
}

/** How a transaction's own statements are sent, per dialect. */
interface TransactionControl {
  begin(): Promise<unknown>;
  end(text: string): Promise<unknown>;
  rollback(): Promise<unknown>;
  /** SQLite: the commit leaves its WAL checkpoint to a thread (WriteTransaction.checkpointAfterCommit). */
  checkpointAfterCommit?(): void;
  /** SQLite: a large page cache until the transaction ends (WriteTransaction.largePageCache). */
  largePageCache?(): void;
}

/** What a write transaction's function can ask of the transaction itself. */
export interface WriteTransaction extends TransactionHandle {
  /** The job's ledger and audit rows, written at the end: after the flush, with COMMIT. */
  closeWith(closing: JobClosing): void;
}

export class UnitOfWork {
  private readonly sqliteWriter = new Mutex();
  /** The native SQLite database (SQLite), looked up once. */
  private sqliteDb: Promise<Database.Database> | undefined;
  /** The ORM's pg pool (PostgreSQL), looked up once. */
  private pgPool: Promise<Pool> | undefined;
  /** SQLite: the large commits whose checkpoint runs in a thread. */
  private checkpoints: DeferredCheckpoints | undefined;
  /**
   * Entity managers of committed write transactions, cleared, for the next ones. A fork
   * per transaction showed in every job's profile: MikroORM's fork sets two configuration
   * values (each writes process.env) and builds the manager's unit of work, loader and
   * factory. Only a transaction that committed gives its manager back: after a failure its
   * unit of work may hold a half-done flush. Nothing keeps a transaction's manager past
   * its end: repositories and job contexts live for one transaction (src/jobs/runner.ts).
   */
  private readonly idleForks: Em[] = [];

  constructor(
    private readonly orm: Orm,
    readonly dialect: Dialect,
    private readonly log?: Logger,
  ) {}

  async write<T>(fn: (em: Em, tx: WriteTransaction) => Promise<T>, opts: WriteOptions = {}): Promise<T> {
    const exclusive = opts.exclusive === true;
    const begin = BEGIN[this.dialect][exclusive ? 'exclusive' : 'shared'];
    if (this.dialect === 'postgresql') return this.writeOnHeldClient(begin, fn, exclusive);
    return this.sqliteWriter.runExclusive(() => this.writeOnSqlite(fn, exclusive, opts.lockWaitMs));
  }

  /**
   * SQLite: BEGIN IMMEDIATE is sent on the native connection first, waiting for another
   * connection's write lock asynchronously (sqliteBeginImmediate), and only then is
   * Kysely's connection taken for the rest of the transaction, so that this thread's
   * other queries (the API's reads) are not queued behind a wait for the lock. A read that
   * slips in between runs inside the transaction before its first write and sees what it
   * would have seen outside.
   */
  private async writeOnSqlite<T>(fn: (em: Em, tx: WriteTransaction) => Promise<T>, exclusive: boolean, lockWaitMs?: number): Promise<T> {
    const db = await (this.sqliteDb ??= sqliteNative(this.orm));
    // An exclusive transaction (a restore) checks its foreign keys once, before commit
    // (src/db/sqlite-foreign-keys.ts); the connection's enforcement is off until it ends.
    await sqliteBeginImmediate(db, lockWaitMs, { foreignKeys: !exclusive });
    let entered = false;
    let cacheRaised = false;
    try {
      return await this.kysely()
        .connection()
        .execute((conn) => {
          entered = true;
          const run = (sql: string) => conn.executeQuery(CompiledQuery.raw(sql));
          const rows = async (sql: string, params: readonly unknown[] = []) => (await conn.executeQuery<Record<string, unknown>>(CompiledQuery.raw(sql, [...params]))).rows as Record<string, unknown>[];
          let large = false;
          const end = async (sql: string) => {
            if (exclusive) await checkSqliteForeignKeys(rows);
            if (!large) return run(sql);
            const checkpoints = (this.checkpoints ??= new DeferredCheckpoints(db, this.log));
            checkpoints.hold();
            let committed = false;
            try {
              const done = await run(sql);
              committed = true;
              return done;
            } finally {
              void checkpoints.release(committed);
            }
          };
          const control: TransactionControl = {
            begin: () => Promise.resolve(), // BEGIN IMMEDIATE went above.
            end,
            rollback: () => run('rollback'),
            checkpointAfterCommit: () => void (large = true),
            largePageCache: () => {
              if (cacheRaised) return;
              db.exec(sqliteLargePageCache.raise);
              cacheRaised = true;
            },
          };
          return this.inTransaction(conn, control, fn, exclusive, undefined);
        });
    } catch (err) {
      // inTransaction rolls back its own failures; this covers not reaching it.
      if (!entered && db.inTransaction) db.exec('rollback');
      throw err;
    } finally {
      if (exclusive && !db.inTransaction) db.exec('pragma foreign_keys = on');
      if (cacheRaised) db.exec(sqliteLargePageCache.lower);
    }
  }

  /**
   * `ctx` becomes the entity manager's transaction context; `run` sends the transaction's
   * own statements (begin, the closing statements with commit, rollback).
   */
  private async inTransaction<T>(
    ctx: Kysely<unknown>,
    /** How the transaction's own statements go: BEGIN (unless the caller began it), the closing statements with COMMIT, ROLLBACK. */
    control: TransactionControl,
    fn: (em: Em, tx: WriteTransaction) => Promise<T>,
    exclusive: boolean,
    pg: TransactionClient | undefined,
  ): Promise<T> {
    // Driver errors of begin and commit become the ORM's exceptions, like those of every
    // query the ORM runs (a processor's own errors pass through untouched).
    const converted = (sent: Promise<unknown>) => sent.catch((err: Error) => Promise.reject(this.orm.em.getDriver().convertException(err)));
    const em = this.idleForks.pop() ?? (this.orm.em.fork() as Em);
    let committed = false;
    const sql = new BoundSql(em, this.dialect, pg);
    const closing: SqlStatement[] = [];
    const tx: WriteTransaction = {
      exclusive,
      // COPY runs on the raw client, past the deferred BEGIN: only exclusive transactions, which begin at once, get it.
      pgClient: exclusive ? pg?.client : undefined,
      sql,
      closeWith: (c) => closing.push(...closingStatements(this.dialect, c)),
      checkpointAfterCommit: () => control.checkpointAfterCommit?.(),
      largePageCache: () => control.largePageCache?.(),
    };
    try {
      await converted(control.begin());
      em.setTransactionContext(ctx as never);
      const result = await fn(em, tx);
      if (hasPendingChanges(em)) await em.flush();
      if (this.dialect === 'postgresql') {
        await converted(control.end(pgCommitQuery(closing)));
      } else {
        for (const statement of closing) await sql.query(statement.text, statement.params);
        await converted(control.end('commit'));
      }
      committed = true;
      return result;
    } catch (err) {
      // Whatever failed (a half-done begin included), the connection goes back to the pool
      // with no transaction open. Where none is left, the rollback fails harmlessly.
      await control.rollback().catch(() => undefined);
      throw err;
    } finally {
      em.resetTransactionContext();
      if (committed && this.idleForks.length < MAX_IDLE_FORKS) {
        em.clear();
        this.idleForks.push(em);
      }
    }
  }

  /**
   * PostgreSQL: the transaction on a pooled client held here (see the file comment). An
   * operation's BEGIN waits for its first statement (TransactionClient); an exclusive
   * transaction (a restore) begins at once, since it hands the raw client to COPY. After
   * a failed exclusive transaction the client is discarded, not pooled: a COPY
   * cut off half-way must not leave a connection in an unknown state for the next job.
   * Other failures end in a rollback and leave the client as clean as Kysely would.
   */
  private async writeOnHeldClient<T>(begin: string, fn: (em: Em, tx: WriteTransaction) => Promise<T>, exclusive: boolean): Promise<T> {
    const pool = await (this.pgPool ??= pgPool(this.orm.em as Em));
    const client = await pool.connect();
    // A client that fails its first check (TransactionClient.of) is discarded too.
    let discard = true;
    try {
      const pg = await TransactionClient.of(client, pool);
      discard = false;
      pg.deferBegin(begin);
      const control: TransactionControl = {
        begin: () => (exclusive ? pg.begun() : Promise.resolve()),
        end: (text) => pg.end(text),
        rollback: () => pg.rollback(),
      };
      return await this.inTransaction(pg.context, control, fn, exclusive, pg);
    } catch (err) {
      discard ||= exclusive;
      throw err;
    } finally {
      client.release(discard);
    }
  }

  private kysely(): Kysely<unknown> {
    return (this.orm.em as Em).getConnection().getClient() as Kysely<unknown>;
  }

  /**
   * A read transaction that sees one consistent state (snapshot export, broker desired
   * state). PostgreSQL: REPEATABLE READ, read only. SQLite: a deferred transaction holds
   * one WAL snapshot for its duration without blocking writers of other processes.
   */
  async read<T>(fn: (em: Em) => Promise<T>): Promise<T> {
    const em = this.orm.em.fork() as Em;
    if (this.dialect === 'sqlite') {
      return this.sqliteWriter.runExclusive(() => em.transactional((tx) => fn(tx as Em)));
    }
    return em.transactional((tx) => fn(tx as Em), { isolationLevel: 'repeatable read', readOnly: true });
  }

  /** The recorded result of a job that committed, outside any transaction. */
  async readLedger(jobId: string): Promise<{ result: unknown } | undefined> {
    return recordedResult(this.fork(), jobId);
  }

  /** A fork for single-statement reads (API listings) outside any transaction. */
  fork(): Em {
    return this.orm.em.fork() as Em;
  }
}
