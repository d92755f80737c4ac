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
import { BoundSql } from './sql.js';
import { JobLedgerRepository } from '../domain/system/repository.js';

/** Touches (no row of) a table that exists once migrated: takes SQLite's write lock. */
const SQLITE_WRITE_LOCK = 'update system_state set key = key where 0';

/** Fixed advisory-lock key shared by every meshq process: "business data". */
const PG_DATA_LOCK_KEY = '7364201554';
const PG_SHARED_LOCK = `select pg_advisory_xact_lock_shared(${PG_DATA_LOCK_KEY})`;
const PG_EXCLUSIVE_LOCK = `select pg_advisory_xact_lock(${PG_DATA_LOCK_KEY})`;

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
          await new BoundSql(tx as Em, 'sqlite').query(SQLITE_WRITE_LOCK);
          return fn(tx as Em);
        }),
      );
    }
    return em.transactional(async (tx) => {
      await new BoundSql(tx as Em, 'postgresql').query(opts.exclusive ? PG_EXCLUSIVE_LOCK : PG_SHARED_LOCK);
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
