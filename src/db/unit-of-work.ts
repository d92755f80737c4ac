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
 * block the event loop. So write transactions are serialized inside the process by an
 * async mutex; busy_timeout covers other processes sharing the file.
 *
 * Write transactions are begun and ended here rather than by `em.transactional`, for
 * two reasons, both on the path of every job: the transaction's first statement can
 * carry its lock (PostgreSQL: `begin` and the advisory lock in one round trip; SQLite:
 * BEGIN IMMEDIATE, which the ORM cannot issue), and the ORM's transaction machinery
 * (forks, event broadcasting, savepoint bookkeeping) was a sixth of a job's CPU time.
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
 * The end carries work too: a transaction may be given closing statements (a job's
 * ledger and audit rows), run after the flush. On PostgreSQL they are sent with COMMIT
 * as one simple query, their values written in as literals, so a job pays one round trip
 * for its closing write and its commit; if one fails, PostgreSQL skips the rest of the
 * query (COMMIT included) and the transaction rolls back as for any other failure.
 */
import { Mutex } from 'async-mutex';
import { CompiledQuery, type Kysely } from 'kysely';
import type { Dialect } from '../config.js';
import type { Em, Orm } from './orm.js';
import { JobLedgerRepository } from '../repositories/system.js';
import { boundSql, inlinePostgres, type SqlStatement } from './sql.js';
import { contextOnClient, pgPool } from './pg-client.js';
import type { Pool } from 'pg';

/** Fixed advisory-lock key shared by every meshq process: "business data". */
const PG_DATA_LOCK_KEY = '7364201554';

/**
 * The first statement of a write transaction, with its lock. SQLite: BEGIN IMMEDIATE takes
 * the write lock at once, waiting (busy_timeout) while another process's writer (a
 * restore) holds it; a deferred BEGIN would let the transaction's first read pin a
 * snapshot from before that writer's commit, and an operation submitted during a restore
 * in another worker process would then see the old data and fail NOT_FOUND for good, or
 * hit SQLITE_BUSY_SNAPSHOT at its first write. PostgreSQL: two statements in one simple
 * query (no parameters), so one round trip.
 */
const BEGIN = {
  sqlite: { shared: 'begin immediate', exclusive: 'begin immediate' },
  postgresql: {
    shared: `begin; select pg_advisory_xact_lock_shared(${PG_DATA_LOCK_KEY})`,
    exclusive: `begin; select pg_advisory_xact_lock(${PG_DATA_LOCK_KEY})`,
  },
} as const;

export interface WriteOptions {
  /** Take the data lock exclusively (restore); operations take it shared. */
  exclusive?: boolean;
}

/**
 * Whether a flush has anything to write. A flush walks the identity map and the persist
 * and remove stacks for changes; with all three empty (a job that wrote only through
 * src/db/sql.ts, like node.update) it finds none, and skipping it saves its event and
 * change-set machinery on every such job.
 */
function hasPendingChanges(em: Em): boolean {
  const uow = em.getUnitOfWork();
  return uow.getPersistStack().size > 0 || uow.getRemoveStack().size > 0 || !uow.getIdentityMap()[Symbol.iterator]().next().done;
}

/** Entity managers of write transactions that hold the data lock exclusively (a restore). */
const exclusiveWrites = new WeakSet<Em>();

/** Whether `em` is that of a write transaction holding the data lock exclusively. */
export const isExclusiveWrite = (em: Em): boolean => exclusiveWrites.has(em);

/** What a write transaction's function can ask of the transaction itself. */
export interface WriteTransaction {
  /** Runs these statements, in order, at the end of the transaction: after the flush, just before COMMIT. */
  closeWith(...statements: SqlStatement[]): void;
}

export class UnitOfWork {
  private readonly sqliteWriter = new Mutex();
  /** The ORM's pg pool (PostgreSQL), looked up once. */
  private pgPool: Promise<Pool> | undefined;

  constructor(
    private readonly orm: Orm,
    readonly dialect: Dialect,
  ) {}

  async write<T>(fn: (em: Em, tx: WriteTransaction) => Promise<T>, opts: WriteOptions = {}): Promise<T> {
    const exclusive = opts.exclusive === true;
    const begin = BEGIN[this.dialect][exclusive ? 'exclusive' : 'shared'];
    if (this.dialect === 'postgresql') return this.writeOnHeldClient(begin, fn, exclusive);
    return this.sqliteWriter.runExclusive(() =>
      this.kysely()
        .connection()
        .execute((conn) => this.inTransaction(conn, (sql) => conn.executeQuery(CompiledQuery.raw(sql)), begin, fn, exclusive)),
    );
  }

  /**
   * `ctx` becomes the entity manager's transaction context; `run` sends the transaction's
   * own statements (begin, the closing statements with commit, rollback).
   */
  private async inTransaction<T>(
    ctx: Kysely<unknown>,
    run: (sql: string) => Promise<unknown>,
    begin: string,
    fn: (em: Em, tx: WriteTransaction) => Promise<T>,
    exclusive: boolean,
  ): Promise<T> {
    // Driver errors of begin and commit become the ORM's exceptions, like those of every
    // query the ORM runs (a processor's own errors pass through untouched).
    const control = (sql: string) => run(sql).catch((err: Error) => Promise.reject(this.orm.em.getDriver().convertException(err)));
    const em = this.orm.em.fork() as Em;
    if (exclusive) exclusiveWrites.add(em);
    const closing: SqlStatement[] = [];
    try {
      await control(begin);
      em.setTransactionContext(ctx as never);
      const result = await fn(em, { closeWith: (...statements) => closing.push(...statements) });
      if (hasPendingChanges(em)) await em.flush();
      if (this.dialect === 'postgresql') {
        await control([...closing.map(inlinePostgres), 'commit'].join('; '));
      } else {
        const sql = boundSql(em);
        for (const statement of closing) await sql.query(statement.text, statement.params);
        await control('commit');
      }
      return result;
    } catch (err) {
      // Whatever failed (a half-done begin included), the connection goes back to the pool
      // with no transaction open. Where none is left, the rollback fails harmlessly.
      await run('rollback').catch(() => undefined);
      throw err;
    } finally {
      em.resetTransactionContext();
    }
  }

  /**
   * PostgreSQL: the transaction on a pooled client held here (see the file comment). After
   * a failed exclusive transaction (a restore) the client is discarded, not pooled: a COPY
   * cut off half-way must not leave a connection in an unknown state for the next job.
   * Other failures end in a rollback and leave the client as clean as Kysely would.
   */
  private async writeOnHeldClient<T>(begin: string, fn: (em: Em, tx: WriteTransaction) => Promise<T>, exclusive: boolean): Promise<T> {
    const pool = await (this.pgPool ??= pgPool(this.orm.em as Em));
    const client = await pool.connect();
    let discard = false;
    try {
      return await this.inTransaction(contextOnClient(client, pool), (sql) => client.query(sql), begin, fn, exclusive);
    } catch (err) {
      discard = exclusive;
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
    return new JobLedgerRepository(this.fork()).recordedResult(jobId);
  }

  /** A fork for single-statement reads (API listings) outside any transaction. */
  fork(): Em {
    return this.orm.em.fork() as Em;
  }
}
