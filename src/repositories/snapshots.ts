/**
 * Snapshots' side of the database, behind one repository for its callers: every business
 * row out as the file's JSON (one consistent read: src/repositories/snapshot-export-pg.ts,
 * src/repositories/snapshot-export-sqlite.ts), every business row in (delete all, insert in
 * bulk, inside the restore's transaction: src/repositories/snapshot-restore.ts), and the
 * stored files (src/repositories/snapshot-archives.ts).
 *
 * Business rows never pass through the identity map: hydrating every row as an entity to
 * copy it would cost several times the work and the memory.
 */
import { isPostgres } from '../migrations/dialect.js';
import { snapshotTableSpecs, type TableSpec } from '../snapshots/tables.js';
import { SnapshotArchiveRepository } from './snapshot-archives.js';
import { writeJsonPostgres } from './snapshot-export-pg.js';
import { writeJsonSqlite } from './snapshot-export-sqlite.js';
import { replaceBusinessData, type RestoreProgress, type RestoreRows } from './snapshot-restore.js';
import type { SnapshotJsonSink } from './snapshot-rows.js';

export class SnapshotRepository extends SnapshotArchiveRepository {

  /** The business tables, in foreign-key order. */
  tableSpecs(): readonly TableSpec[] {
    return snapshotTableSpecs(this.em.getMetadata());
  }

  /** Names of the migrations the database has applied, in the order they ran. */
  async appliedMigrations(): Promise<string[]> {
    const table = this.em.config.get('migrations').tableName ?? 'mikro_orm_migrations';
    const platform = this.em.getPlatform();
    const rows = await this.em.execute<{ name: string }[]>(
      `select ${platform.quoteIdentifier('name')} from ${platform.quoteIdentifier(table)} order by ${platform.quoteIdentifier('id')}`,
    );
    return rows.map((r) => r.name);
  }

  /**
   * Every business row, as of one instant, written as JSON into `sink`, table by table in
   * foreign-key order, rows in code-unit order of their key, in the snapshot's value forms
   * (src/snapshots/tables.ts). Returns the sink. The writer compresses on the thread pool
   * while the next rows are read.
   * PostgreSQL: on a REPEATABLE READ connection of its own. SQLite: in the caller's
   * transaction (a job's, or uow.read), which already reads one WAL snapshot.
   */
  async writeBusinessTablesJson<S extends SnapshotJsonSink>(sink: S): Promise<S> {
    if (isPostgres(this.em.getDriver())) return writeJsonPostgres(this.em, this.tableSpecs(), sink);
    if (!this.em.isInTransaction()) {
      throw new Error('SnapshotRepository.writeBusinessTablesJson on SQLite must run inside a transaction (uow.read or a job)');
    }
    return writeJsonSqlite(this.em, this.sql, this.tableSpecs(), sink);
  }

  /** Row count of every business table (diagnostics, benchmarks). */
  async businessRowCounts(): Promise<Record<string, number>> {
    const out: Record<string, number> = {};
    for (const spec of this.tableSpecs()) out[spec.table] = await this.em.count(spec.entity, {});
    return out;
  }

  /**
   * Replaces every business row with the given rows (whole tables, or streamed batch by
   * batch), in the caller's transaction (src/repositories/snapshot-restore.ts); on
   * PostgreSQL it must be an exclusive write transaction.
   */
  async replaceBusinessData(rows: RestoreRows, progress?: RestoreProgress): Promise<Record<string, number>> {
    return replaceBusinessData(this.em, this.tx, this.tableSpecs(), rows, progress);
  }
}
