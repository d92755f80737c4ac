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
 */
import { Mutex } from 'async-mutex';
import type { Dialect } from '../config.js';
import type { Em, Orm } from './orm.js';
import { JobLedgerRepository } from '../domain/system/repository.js';

/** Any table that exists once migrated; SQLite writers touch it (no row) to take the write lock. */
const SQLITE_LOCK_TABLE = '`system_state`';

/** Fixed advisory-lock key shared by every meshq process: "business data". */
const PG_DATA_LOCK_KEY = '7364201554';

export interface WriteOptions {
  /** Take the data lock exclusively (restore); operations take it shared. */
  exclusive?: boolean;
}

export class UnitOfWork {
  private readonly sqliteWriter = new Mutex();

  constructor(
    private readonly orm: Orm,
    readonly dialect: Dialect,
  ) {}

  async write<T>(fn: (em: Em) => Promise<T>, opts: WriteOptions = {}): Promise<T> {
    const em = this.orm.em.fork() as Em;
    if (this.dialect === 'sqlite') {
      return this.sqliteWriter.runExclusive(() =>
        em.transactional(async (tx) => {
          // BEGIN IMMEDIATE, in effect (the ORM only issues a deferred BEGIN): a write that
          // touches no row still takes SQLite's write lock, waiting (busy_timeout) while
          // another process's writer (a restore) holds it. Without it the transaction's
          // first read would pin a snapshot from BEFORE that writer's commit: an operation
          // submitted during a restore in another worker process would then see the old
          // data and fail NOT_FOUND for good, or hit SQLITE_BUSY_SNAPSHOT at its first write.
          await (tx as Em).execute(`update ${SQLITE_LOCK_TABLE} set key = key where 0`, [], 'run');
          return fn(tx as Em);
        }),
      );
    }
    return em.transactional(async (tx) => {
      const lock = opts.exclusive ? 'pg_advisory_xact_lock' : 'pg_advisory_xact_lock_shared';
      await (tx as Em).getConnection().execute(`select ${lock}(${PG_DATA_LOCK_KEY})`, [], 'all', tx.getTransactionContext());
      return fn(tx as Em);
    });
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
